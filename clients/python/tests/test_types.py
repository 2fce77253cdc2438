"""The package type-checks (mypy --strict) with the README's examples, and the types
catch a caller's mistakes: a misspelt spec key, a missing required key, a value of the
wrong type, an answer's field that does not exist. Needs mypy (run-tests installs it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

REQUIRE = os.environ.get("PADDOCK_TEST_REQUIRE") == "1"
HERE = os.path.dirname(os.path.abspath(__file__))


def mypy(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        import mypy  # noqa: F401
    except ImportError:
        if REQUIRE:
            pytest.fail("mypy is not installed [PADDOCK_TEST_REQUIRE=1]")
        pytest.skip("mypy is not installed")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), *args],
        capture_output=True, text=True, timeout=300,
    )


def test_package_type_checks(tmp_path):
    r = mypy(tmp_path, "-p", "paddock_client")  # the installed package (under run-tests)
    assert r.returncode == 0, r.stdout + r.stderr


def test_readme_examples_type_check(tmp_path):
    with open(os.path.join(HERE, "..", "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"^```python\n(.*?)^```", f.read(), re.S | re.M)
    files = []
    for i, b in enumerate(blocks):
        p = tmp_path / f"readme_{i}.py"
        p.write_text(b)
        files.append(str(p))
    assert len(files) == 2
    r = mypy(tmp_path, *files)
    assert r.returncode == 0, r.stdout + r.stderr


BAD = '''
from paddock_client import AsyncClient, Client

c = Client()
c.create_sandbox({"id": "x", "comand": "sleep"})                        # 1 misspelt, 2 missing
c.update_sandbox("x", {"memory_max": "1G"})                             # 3 a str for an int
c.create_sandbox({"id": "x", "command": "sh", "stdio": {"stdout": "pipe"}})  # 4 not a choice
print(c.get_sandbox("x").pidd)                                          # 5 no such field
report = c.stop_sandbox("x")
report.reason = "killed"                                                # 6 frozen
for ev in c.events():
    print(ev.report)                                                    # 7 not on every Event


async def f(a: AsyncClient) -> int:
    return a.get_sandbox("x").pid                                       # 8 a coroutine
'''


def test_types_catch_mistakes(tmp_path):
    p = tmp_path / "bad.py"
    p.write_text(BAD)
    r = mypy(tmp_path, str(p))
    errors = [line for line in r.stdout.splitlines() if ": error:" in line]
    lines = {int(line.split(":")[1]) for line in errors}
    assert r.returncode == 1 and lines == {5, 6, 7, 8, 10, 12, 16}, r.stdout
    assert sum("bad.py:5:" in e for e in errors) == 2, r.stdout
