"""The client against a real daemon (started by run-tests): every operation, over the
unix socket and over TCP with the token, blocking and asyncio; waits, the event stream,
and the API's errors with their status and message."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from conftest import SOCKET, TOKEN_FILE, URL, make_client
from paddock_client import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    NotFound,
    PaddockError,
    Gone,
    ServiceUnavailable,
    TooManyRequests,
    TransportError,
    Unauthorized,
    Unprocessable,
    models as m,
)

DEADLINE = 20.0  # seconds for anything that should take milliseconds


def poll(what, f, deadline=DEADLINE):
    end = time.monotonic() + deadline
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline} s waiting for {what}")
        time.sleep(0.02)


def test_sandbox_lifecycle(client: Client, sandbox_id):
    sid = sandbox_id()
    info = client.create_sandbox(
        {"id": sid, "command": "sleep", "args": ["300"], "labels": {"suite": "pyclient", "k": sid},
         "stop": {"grace_period_ms": 5000}}
    )
    assert isinstance(info, m.SandboxInfo)
    assert (info.id, info.state, info.current, info.paused) == (sid, "running", True, False)
    assert info.pid and info.pid > 1 and info.cgroup_path.endswith(f"{sid}@{info.lifecycle}")
    assert info.spec["command"] == "sleep" and info.spec["args"] == ["300"]
    with open(f"/proc/{info.pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[:2] == [b"sleep", b"300"]

    got = client.get_sandbox(sid)
    assert (got.id, got.lifecycle, got.pid) == (sid, info.lifecycle, info.pid)
    assert client.get_sandbox(sid, lifecycle=info.lifecycle).lifecycle == info.lifecycle

    assert sid in {s.id for s in client.list_sandboxes()}
    assert [s.id for s in client.list_sandboxes(label=[f"k={sid}"])] == [sid]
    assert [s.id for s in client.list_sandboxes(label=[f"k={sid}", "suite"])] == [sid]
    assert client.list_sandboxes(label=[f"k={sid}", "suite=other"]) == []

    stats = client.sandbox_stats(sid)
    assert isinstance(stats, m.SandboxStats) and stats.processes == 1

    paused = client.pause_sandbox(sid)
    assert paused.paused is True and client.get_sandbox(sid).paused is True
    assert client.resume_sandbox(sid).paused is False

    before = time.time() * 1000
    moved = client.extend_sandbox_deadline(sid, "10m")
    assert moved.deadline_at_ms is not None and moved.deadline_at_ms >= before + 600_000 - 1000

    controllers = client.node_info().cgroup.controllers
    if "pids" in controllers:
        updated = client.update_sandbox(sid, {"pids_max": 64})
        assert updated.spec["limits"]["pids_max"] == 64
    else:
        with pytest.raises(Unprocessable) as e:
            client.update_sandbox(sid, {"pids_max": 64})
        assert e.value.status == 422 and "pids" in e.value.message

    # A wait with a timeout that passes shows the sandbox live.
    t0 = time.monotonic()
    live = client.wait_sandbox(sid, timeout="200ms")
    assert live.state == "running" and time.monotonic() - t0 >= 0.15

    report = client.stop_sandbox(sid, timeout=2)
    assert isinstance(report, m.StopReport)
    assert report.reason == "requested" and report.signalled == 1 and report.killed_after_grace == 0
    done = client.wait_sandbox(sid)
    assert done.state == "stopped" and done.main_exit is not None and done.main_exit.signal == 15
    assert done.stop_report is not None and done.stop_report.reason == "requested"
    assert not os.path.exists(info.cgroup_path)

    client.delete_sandbox(sid)
    with pytest.raises(NotFound) as e:
        client.get_sandbox(sid)
    assert e.value.status == 404 and e.value.message == f"no sandbox {sid}"


def test_wait_for_exit_code_and_logs(client: Client, sandbox_id):
    sid = sandbox_id()
    client.create_sandbox({"id": sid, "command": "sh", "args": ["-c", "echo out-$0; echo err >&2; exit 7", sid]})
    info = client.wait_sandbox(sid, timeout="20s")
    assert info.state == "stopped", info
    assert info.main_exit == m.MainExit(core_dumped=False, code=7, signal=None)
    assert info.stop_report is not None and info.stop_report.reason == "main_exited"
    logs = client.sandbox_logs(sid)
    assert f"out-{sid}\n" in logs and "err\n" in logs
    assert client.sandbox_logs(sid, lifecycle=info.lifecycle) == logs
    with pytest.raises(Conflict) as e:
        client.sandbox_stats(sid)
    assert e.value.status == 409
    client.delete_sandbox(sid, lifecycle=info.lifecycle)
    assert sid not in {s.id for s in client.list_sandboxes()}


def test_kill(client: Client, sandbox_id):
    sid = sandbox_id()
    # A payload that ignores SIGTERM: only the kill ends it.
    client.create_sandbox({"id": sid, "command": "sh", "args": ["-c", "trap '' TERM; while :; do sleep 1; done"]})
    report = client.kill_sandbox(sid)
    assert report.reason == "killed" and report.grace_ms == 0
    info = client.get_sandbox(sid)
    assert info.state == "stopped" and info.main_exit is not None and info.main_exit.signal == 9
    # A kill of a stopped sandbox answers its report again.
    assert client.kill_sandbox(sid).reason == "killed"
    client.delete_sandbox(sid)


def test_errors_carry_status_and_message(client: Client, sandbox_id):
    sid = sandbox_id()
    with pytest.raises(NotFound) as e:
        client.stop_sandbox(sid)
    assert (e.value.status, e.value.message) == (404, f"no sandbox {sid}")
    assert e.value.body == {"error": f"no sandbox {sid}"}

    with pytest.raises(BadRequest) as e:
        client.create_sandbox({"id": sid, "command": "true", "bogus": 1})  # type: ignore[typeddict-unknown-key]
    assert e.value.status == 400 and "unknown field `bogus`" in e.value.message

    with pytest.raises(BadRequest) as e:
        client.get_sandbox("a/b")
    assert e.value.status in (400, 404)

    with pytest.raises(BadRequest) as e:
        client.wait_sandbox(sid, timeout="soon")
    assert e.value.status == 400 and e.value.message.startswith("timeout:")

    with pytest.raises(Unprocessable) as e:
        client.create_sandbox({"id": sid, "command": "/nonexistent/program"})
    assert e.value.status == 422 and "/nonexistent/program" in e.value.message

    client.create_sandbox({"id": sid, "command": "sleep", "args": ["300"]})
    with pytest.raises(Conflict) as e:
        client.create_sandbox({"id": sid, "command": "sleep", "args": ["300"]})
    assert e.value.status == 409 and sid in e.value.message
    with pytest.raises(Conflict) as e:
        client.delete_sandbox(sid)
    assert e.value.status == 409 and "stop it first" in e.value.message
    client.kill_sandbox(sid)
    with pytest.raises(Conflict):
        client.pause_sandbox(sid)
    with pytest.raises(Conflict):
        client.extend_sandbox_deadline(sid, "1m")
    client.delete_sandbox(sid)

    with pytest.raises(Unprocessable) as e:
        client.events(since=2**62)
    assert e.value.status == 422 and "past the newest event" in e.value.message

    # Every error is a PaddockError.
    with pytest.raises(PaddockError):
        client.get_sandbox(sid)


def test_tcp_needs_the_token(sandbox_id):
    sandbox_id()  # skips without a daemon
    with pytest.raises(Unauthorized) as e:
        Client(url=URL, token="x" * 32).list_sandboxes()
    assert e.value.status == 401 and "token" in e.value.message
    with pytest.raises(Unauthorized):
        Client(url=URL).healthz()  # no token at all (none in the environment either)

    async def run():
        with pytest.raises(Unauthorized):
            await AsyncClient(url=URL, token="y" * 32).node_info()

    asyncio.run(run())


def test_no_daemon_is_a_transport_error(tmp_path):
    with pytest.raises(TransportError) as e:
        Client(str(tmp_path / "none.sock"), timeout=5).healthz()
    assert e.value.status is None and "none.sock" in str(e.value)

    async def run():
        with pytest.raises(TransportError):
            await AsyncClient(str(tmp_path / "none.sock"), timeout=5).healthz()

    asyncio.run(run())


def test_node_and_daemon(client: Client):
    assert client.healthz().status == "ok"
    assert client.readyz().status == "ready"
    node = client.node_info()
    assert isinstance(node, m.NodeInfo) and node.draining is False
    assert node.cgroup.root.endswith("/sandboxes") and node.capacity.cpus > 0
    text = client.metrics()
    assert "paddock_sandbox_starts_total" in text
    doc = client.openapi()
    here = os.path.join(os.path.dirname(__file__), "..", "..", "..", "crates", "paddock", "openapi.json")
    with open(here, encoding="utf-8") as f:
        committed = json.load(f)
    # The daemon under test serves the operations and schemas the client was checked against.
    ops = lambda d: {(meth, p) for p, item in d["paths"].items() for meth in item}  # noqa: E731
    assert ops(doc) == ops(committed)
    assert set(doc["components"]["schemas"]) == set(committed["components"]["schemas"])


def test_drain_refuses_creates(client: Client, sandbox_id):
    sid = sandbox_id()
    try:
        report = client.drain_node()
        assert isinstance(report, m.DrainReport) and report.draining and not report.was_draining
        assert client.node_info().draining is True
        with pytest.raises(ServiceUnavailable) as e:
            client.create_sandbox({"id": sid, "command": "true"})
        assert e.value.status == 503 and e.value.retry_after is not None and "drain" in e.value.message
        again = client.drain_node(stop=False, grace="1s")
        assert again.was_draining is True and again.stopped == 0
    finally:
        undrained = client.undrain_node()
    assert undrained.was_draining is True and undrained.draining is False
    client.create_sandbox({"id": sid, "command": "true"})
    assert client.wait_sandbox(sid).main_exit.code == 0  # type: ignore[union-attr]
    client.delete_sandbox(sid)


def test_drain_with_stop(client: Client, sandbox_id):
    sid = sandbox_id()
    client.create_sandbox({"id": sid, "command": "sleep", "args": ["300"]})
    try:
        report = client.drain_node(stop=True, grace="2s")
        assert report.stopped >= 1 and report.failed == [] and report.live == 0
    finally:
        client.undrain_node()
    info = client.get_sandbox(sid)
    assert info.state == "stopped" and info.stop_report is not None and info.stop_report.reason == "drain"


def test_event_stream(client: Client, sandbox_id):
    sid = sandbox_id()
    with client.events(id=sid) as stream:
        client.create_sandbox({"id": sid, "command": "sh", "args": ["-c", "exit 3"]})
        seen: list[m.Event] = []
        for ev in stream:
            assert isinstance(ev, m.Event), ev
            seen.append(ev)
            if isinstance(ev, m.Stopped):
                break
    types = [e.type for e in seen]
    assert types == ["started", "main_exited", "stopping", "stopped"], types
    assert all(e.id == sid for e in seen)
    assert len({e.lifecycle for e in seen}) == 1
    seqs = [e.seq for e in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    started, exited, stopping, stopped = seen
    assert isinstance(started, m.Started) and started.pid > 1
    assert isinstance(exited, m.MainExited) and exited.status == m.MainExit(core_dumped=False, code=3)
    assert isinstance(stopping, m.Stopping) and stopping.reason == "main_exited"
    assert isinstance(stopped, m.Stopped) and stopped.report and stopped.report.reason == "main_exited"
    assert stream.last_seq == seqs[-1]

    # Resuming: after the first event, from `since` and from Last-Event-ID alike.
    for kw in ({"since": seqs[0]}, {"last_event_id": str(seqs[0])}):
        with client.events(id=sid, **kw) as again:
            replay = [next(again).seq for _ in range(3)]
        assert replay == seqs[1:], (kw, replay)


def test_restarting_event_has_both_times(client: Client, sandbox_id):
    """`restarting`: `at_ms` is when the restart was decided, `restart_at_ms` when it is
    due (the backoff later), and the new lifecycle starts then."""
    sid = sandbox_id()
    with client.events(id=sid) as stream:
        client.create_sandbox(
            {"id": sid, "command": "sh", "args": ["-c", "exit 1"],
             "restart": {"mode": "on_failure", "max_restarts": 1, "initial_backoff_ms": 300}}
        )
        seen = []
        for ev in stream:
            seen.append(ev)
            if isinstance(ev, m.Stopped) and len([e for e in seen if isinstance(e, m.Stopped)]) == 2:
                break
    restarting = [e for e in seen if isinstance(e, m.Restarting)]
    assert len(restarting) == 1, [e.type for e in seen]
    r = restarting[0]
    assert r.attempt == 1
    assert r.restart_at_ms - r.at_ms >= 250, r  # the backoff, not the same time twice
    restarted = [e for e in seen if isinstance(e, m.Started)][1]
    assert restarted.lifecycle != r.lifecycle and restarted.at_ms >= r.restart_at_ms - 5
    info = client.wait_sandbox(sid)
    assert info.restart_count == 1 and info.state == "stopped"


def test_async_lifecycle_and_events(transport, sandbox_id):
    sid = sandbox_id()

    async def run():
        c = make_client(transport, AsyncClient)
        assert (await c.healthz()).status == "ok"
        assert (await c.readyz()).status == "ready"
        async with c.events(id=sid) as stream:
            info = await c.create_sandbox({"id": sid, "command": "sleep", "args": ["300"]})
            assert info.state == "running"
            first = await stream.__anext__()
            assert isinstance(first, m.Started) and first.pid == info.pid
            # Calls run concurrently with the open stream.
            got, listed, stats = await asyncio.gather(
                c.get_sandbox(sid), c.list_sandboxes(label=None), c.sandbox_stats(sid)
            )
            assert got.pid == info.pid and sid in {s.id for s in listed} and stats.processes == 1
            assert (await c.pause_sandbox(sid)).paused
            assert not (await c.resume_sandbox(sid)).paused
            assert (await c.extend_sandbox_deadline(sid, 60)).deadline_at_ms
            assert (await c.wait_sandbox(sid, timeout=0.1)).state == "running"
            waiter = asyncio.ensure_future(c.wait_sandbox(sid))
            report = await c.stop_sandbox(sid, timeout="1s")
            assert report.reason == "requested"
            waited = await asyncio.wait_for(waiter, DEADLINE)
            assert waited.state == "stopped" and waited.main_exit and waited.main_exit.signal == 15
            kinds = [first.type]
            async for ev in stream:
                kinds.append(ev.type)
                if {"main_exited", "stopped"} <= set(kinds):
                    break
            # main_exited and stopped come in either order (the daemon's monitor of the
            # main process and the stop race), the rest in this one.
            assert kinds[:5] == ["started", "paused", "resumed", "deadline_set", "stopping"], kinds
            assert sorted(kinds[5:]) == ["main_exited", "stopped"], kinds
        assert (await c.sandbox_logs(sid)) == ""
        try:
            await c.update_sandbox(sid, {"pids_max": None})
        except Conflict as e:
            assert e.status == 409
        else:
            raise AssertionError("update of a stopped sandbox succeeded")
        assert (await c.kill_sandbox(sid)).reason == "requested"
        await c.delete_sandbox(sid)
        try:
            await c.get_sandbox(sid)
        except NotFound as e:
            assert e.message == f"no sandbox {sid}"
        else:
            raise AssertionError("deleted sandbox still there")
        node = await c.node_info()
        assert node.sandboxes.live >= 0
        assert "paddock_" in await c.metrics()
        assert "paths" in await c.openapi()
        try:
            async with c.events(since=2**62):
                pass
        except Unprocessable as e:
            assert e.status == 422
        else:
            raise AssertionError("events past the newest seq opened")

    asyncio.run(asyncio.wait_for(run(), 60))


def test_async_drain(transport, sandbox_id):
    sid = sandbox_id()

    async def run():
        c = make_client(transport, AsyncClient)
        try:
            assert (await c.drain_node()).draining
            try:
                await c.create_sandbox({"id": sid, "command": "true"})
            except ServiceUnavailable as e:
                assert e.status == 503
            else:
                raise AssertionError("create while draining succeeded")
        finally:
            assert (await c.undrain_node()).was_draining

    asyncio.run(asyncio.wait_for(run(), 60))


def test_many_sandboxes_and_waits_in_parallel(sandbox_id):
    ids = [sandbox_id(str(i)) for i in range(8)]

    async def run():
        c = AsyncClient(SOCKET)
        await asyncio.gather(*(c.create_sandbox({"id": s, "command": "sh", "args": ["-c", f"sleep 0.2; exit {i}"]})
                               for i, s in enumerate(ids)))
        infos = await asyncio.gather(*(c.wait_sandbox(s) for s in ids))
        assert [i.main_exit.code for i in infos] == list(range(8))  # type: ignore[union-attr]
        await asyncio.gather(*(c.delete_sandbox(s) for s in ids))

    asyncio.run(asyncio.wait_for(run(), 60))


MAX_SANDBOXES = int(os.environ.get("PADDOCK_TEST_MAX_SANDBOXES", "0"))
EVENT_RETENTION = int(os.environ.get("PADDOCK_TEST_EVENT_RETENTION", "0"))


def test_admission_limit_is_429(client: Client, sandbox_id):
    if not MAX_SANDBOXES:
        pytest.skip("the daemon has no --max-sandboxes (PADDOCK_TEST_MAX_SANDBOXES)")
    live = client.node_info().sandboxes.live
    ids = []
    for _ in range(MAX_SANDBOXES - live):
        ids.append(sandbox_id())
        client.create_sandbox({"id": ids[-1], "command": "sleep", "args": ["300"]})
    with pytest.raises(TooManyRequests) as e:
        client.create_sandbox({"id": sandbox_id("over"), "command": "sleep", "args": ["300"]})
    assert e.value.status == 429 and "max-sandboxes" in e.value.message, e.value.message
    for sid in ids:
        client.kill_sandbox(sid)
        client.delete_sandbox(sid)


def _fill_ring(client: Client, sid: str) -> None:
    """More events than the ring keeps (pause and resume are one event each)."""
    client.create_sandbox({"id": sid, "command": "sleep", "args": ["300"]})
    for _ in range(EVENT_RETENTION // 2 + 1):
        client.pause_sandbox(sid)
        client.resume_sandbox(sid)
    client.kill_sandbox(sid)
    client.delete_sandbox(sid)


def test_events_gone_is_410(client: Client, sandbox_id):
    if not EVENT_RETENTION:
        pytest.skip("the daemon's --event-retention is unknown (PADDOCK_TEST_EVENT_RETENTION)")
    _fill_ring(client, sandbox_id())
    with pytest.raises(Gone) as e:
        client.events(since=0)
    err = e.value
    assert err.status == 410 and "no longer kept" in err.message
    assert err.last_seq is not None and err.last_seq > EVENT_RETENTION
    assert err.oldest_seq == err.last_seq - EVENT_RETENTION + 1, err.body
    # As the message says: follow from last_seq. (Events are committed after the
    # operation answers, so the killed sandbox's last ones may still come first.)
    sid = sandbox_id()
    with client.events(since=err.last_seq) as stream:
        client.create_sandbox({"id": sid, "command": "true"})
        first = next(stream)
        assert first.seq == err.last_seq + 1, first
        ev = first
        while ev.id != sid:
            ev = next(stream)
        assert ev.type == "started" and ev.seq > err.last_seq

    async def run():
        c = make_client("unix", AsyncClient)
        try:
            async with c.events(since=0):
                pass
        except Gone as g:
            assert g.status == 410 and g.last_seq is not None and g.last_seq >= err.last_seq
        else:
            raise AssertionError("since=0 past the ring opened")

    asyncio.run(asyncio.wait_for(run(), 30))


def test_environment_names_the_daemon(monkeypatch, sandbox_id):
    sandbox_id()  # skips without a daemon
    with open(TOKEN_FILE) as f:  # type: ignore[arg-type]
        token = f.read().strip()
    monkeypatch.delenv("PADDOCK_SOCKET", raising=False)
    monkeypatch.setenv("PADDOCK_URL", URL)  # type: ignore[arg-type]
    monkeypatch.setenv("PADDOCK_TOKEN", token)
    assert Client().healthz().status == "ok"
    assert asyncio.run(AsyncClient().readyz()).status == "ready"
    monkeypatch.delenv("PADDOCK_URL")
    monkeypatch.setenv("PADDOCK_SOCKET", SOCKET)  # type: ignore[arg-type]
    assert Client().node_info().cgroup.root.endswith("/sandboxes")
