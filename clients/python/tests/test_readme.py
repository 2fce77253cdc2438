"""The README's Python examples run as they are against the daemon (each in a fresh
interpreter, with PADDOCK_SOCKET set as a user would), and print what they say."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import SOCKET, daemon_or_skip

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def blocks() -> list[str]:
    with open(README, encoding="utf-8") as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), re.S | re.M)


def test_readme_has_examples():
    assert len(blocks()) == 2


@pytest.mark.parametrize("index", [0, 1])
def test_readme_example_runs(index):
    daemon_or_skip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PADDOCK_")}
    env["PADDOCK_SOCKET"] = SOCKET
    r = subprocess.run([sys.executable, "-c", blocks()[index]], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    out = r.stdout
    if index == 0:
        assert re.search(r"^example-\w+ is running, pid \d+$", out, re.M), out
        assert re.search(r"^cannot delete yet: 409 sandbox example-\w+ is running", out, re.M), out
        assert "still running after 100 ms: running" in out
        assert re.search(r"^stopped \(requested\) in [\d.]+ ms$", out, re.M), out
        events = re.findall(r"^event \d+: (\w+)$", out, re.M)
        assert events[:2] == ["started", "stopping"], out
        assert sorted(events[2:]) == ["main_exited", "stopped"], out
        assert "main process: MainExit(core_dumped=False, code=None, signal=15)" in out
        assert re.search(r"^log: hello from example-\w+$", out, re.M), out
        assert re.search(r"^gone: 404 no sandbox example-\w+$", out, re.M), out
    else:
        lines = out.splitlines()
        assert len(lines) == 3 and all(re.fullmatch(r"example-\w+ stopped 4", l) for l in lines), out
