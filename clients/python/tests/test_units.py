"""The client's own parsing, without a daemon: server-sent events, event types, errors,
durations, and answers with fields this client does not know."""

from __future__ import annotations

import datetime
import json

import pytest

from paddock_client import errors
from paddock_client import models as m
from paddock_client._ops import SseParser, duration
from paddock_client.client import EventStream


class FakeResponse:
    def __init__(self, text: str) -> None:
        self.lines = [line.encode() for line in text.splitlines(keepends=True)]

    def readline(self) -> bytes:
        return self.lines.pop(0) if self.lines else b""


class FakeConn:
    closed = False

    def close(self) -> None:
        self.closed = True


def ev(seq: int, type_: str, **kw: object) -> str:
    return json.dumps({"seq": seq, "id": "s", "lifecycle": "l", "at_ms": 5, "type": type_, **kw})


def test_event_stream_parses_sse():
    text = (
        ": keep-alive\n\n"
        f"event: started\nid: 1\ndata: {ev(1, 'started', pid=42)}\n\n"
        "event: lagged\ndata: {\"missed\": 7}\n\n"
        ":\n\n"
        f"event: paused\r\nid: 9\r\ndata: {ev(9, 'paused')}\r\n\r\n"
        f"event: something_new\nid: 10\ndata: {ev(10, 'something_new', x=1)}\n\n"
        # data split over lines is joined with newlines (JSON allows them between tokens)
        f"event: resumed\nid: 11\ndata: {{\"seq\": 11,\ndata: \"id\": \"s\", \"lifecycle\": \"l\",\ndata: \"at_ms\": 6, \"type\": \"resumed\"}}\n\n"
    )
    conn = FakeConn()
    s = EventStream(conn, FakeResponse(text))  # type: ignore[arg-type]
    got = list(s)
    assert [type(e) for e in got] == [m.Started, m.Paused, m.Event, m.Resumed]
    assert got[0] == m.Started(seq=1, id="s", lifecycle="l", at_ms=5, type="started", pid=42)
    assert got[2].type == "something_new" and got[3].at_ms == 6
    assert s.missed == 7 and s.last_seq == 11 and conn.closed


def test_sse_parser_edge_cases():
    p = SseParser()
    assert p.line(b"data:no-space\n") is None
    assert p.line(b"id:3\n") is None
    item = p.line(b"\n")
    assert item == m.EventStreamItem(event="message", data="no-space", id="3")
    assert p.line(b"event: x\n") is None and p.line(b"\n") is None  # no data: nothing


def test_restarting_has_both_times():
    data = '{"seq":5,"id":"r","lifecycle":"l","at_ms":100,"type":"restarting","attempt":2,"restart_at_ms":350}'
    r = m.parse_event(data)
    assert r == m.Restarting(seq=5, id="r", lifecycle="l", at_ms=100, type="restarting", attempt=2, restart_at_ms=350)


def test_every_event_type_parses():
    report = {"reason": "requested", "signalled": 1, "signal_ms": 0.1, "grace_ms": 1.0,
              "killed_after_grace": 0, "kill_ms": 0.0, "remove_ms": 0.1, "rmdir_fallback": False,
              "pids_frozen": False, "total_ms": 1.2, "stuck": [{"pid": 9, "comm": "x"}]}
    kinds = {
        "started": {"pid": 1, "jail": {"uid": 0, "gid": 0, "groups": [], "capabilities": [], "landlock_mode": "off"}},
        "adopted": {"pid": None, "state": "running"},
        "start_failed": {"error": "e"},
        "main_exited": {"status": {"code": 0, "signal": None, "core_dumped": False}},
        "stopping": {"reason": "deadline"},
        "leaked_processes_killed": {"count": 2},
        "stopped": {"report": report},
        "quarantined": {"stuck": [{"pid": 3}]},
        "failed": {"error": "e"},
        "oom": {"oom_kills": 1, "oom_group_kills": 0},
        "limits_updated": {"limits": {"pids_max": 5}},
        "paused": {}, "resumed": {}, "restart_cancelled": {},
        "deadline_set": {"deadline_at_ms": 9},
        "deadline": {"deadline_at_ms": 9},
    }
    for t, kw in kinds.items():
        e = m.parse_event(ev(1, t, **kw))
        assert type(e) is m.EVENT_TYPES[t] and e.type == t
        for k in kw:
            assert hasattr(e, k), (t, k)
    stopped = m.parse_event(ev(1, "stopped", report=report))
    assert isinstance(stopped, m.Stopped) and stopped.report is not None
    assert stopped.report.stuck == [m.StuckProcess(pid=9, comm="x")]
    started = m.parse_event(ev(1, "started", **kinds["started"]))
    assert isinstance(started, m.Started) and isinstance(started.jail, m.JailStatus)
    assert m.parse_event('{"missed": 3}') == m.Lagged(missed=3)


def test_unknown_fields_are_ignored_and_missing_optional_ones_are_none():
    s = m.MainExit.from_json({"core_dumped": False, "code": 1, "new_field": True})
    assert s == m.MainExit(core_dumped=False, code=1, signal=None)
    with pytest.raises(TypeError):
        m.MainExit.from_json({"code": 1})  # a required field missing


@pytest.mark.parametrize(
    "status,cls",
    [(400, errors.BadRequest), (401, errors.Unauthorized), (404, errors.NotFound),
     (409, errors.Conflict), (410, errors.Gone), (422, errors.Unprocessable),
     (429, errors.TooManyRequests), (500, errors.ServerError), (503, errors.ServiceUnavailable),
     (418, errors.PaddockError)],
)
def test_errors_by_status(status, cls):
    e = errors.error_for(status, b'{"error": "what went wrong"}', "GET", "/x", {"retry-after": "5"})
    assert type(e) is cls and e.status == status and e.message == "what went wrong"
    assert str(e) == f"GET /x: {status} what went wrong"
    assert isinstance(e, errors.PaddockError)


def test_error_without_json_body():
    e = errors.error_for(502, b"Bad Gateway\n", "POST", "/v1/sandboxes", {})
    assert e.message == "Bad Gateway" and e.body is None and e.status == 502
    gone = errors.error_for(410, b'{"error": "old", "last_seq": 9, "oldest_seq": 4}', "GET", "/v1/events", {})
    assert isinstance(gone, errors.Gone) and (gone.last_seq, gone.oldest_seq) == (9, 4)
    busy = errors.error_for(503, b'{"error": "draining"}', "POST", "/v1/sandboxes", {"retry-after": "30"})
    assert isinstance(busy, errors.ServiceUnavailable) and busy.retry_after == "30"


def test_durations():
    assert duration("10s") == "10s"
    assert duration(2) == "2000ms"
    assert duration(0.25) == "250ms"
    assert duration(0.0005) == "0.5ms"
    assert duration(datetime.timedelta(minutes=1)) == "60000ms"
    for bad in (-1, float("nan"), True):
        with pytest.raises(ValueError):
            duration(bad)  # type: ignore[arg-type]


def test_nested_answers_are_built():
    """Every dataclass field holding dataclasses (also in an Optional list) is built."""
    r = m.StopReport.from_json({
        "reason": "killed", "signalled": 0, "signal_ms": 0, "grace_ms": 0, "killed_after_grace": 1,
        "kill_ms": 1, "remove_ms": 1, "rmdir_fallback": False, "pids_frozen": False, "total_ms": 2,
        "stuck": [{"pid": 2}], "killed": [{"pid": 1, "comm": "sleep"}],
    })
    assert r.killed == [m.KilledProcess(pid=1, comm="sleep")] and r.stuck == [m.StuckProcess(pid=2)]
    psi = {"avg10": 0.0, "avg60": 0.0, "avg300": 0.0, "total_usec": 1}
    st = m.SandboxStats.from_json({"processes": 1, "pressure": {"cpu": {"some": psi, "full": None}}})
    assert st.pressure == m.SandboxPressure(cpu=m.PsiStats(some=m.PsiLine(**psi), full=None))
    d = m.DrainReport.from_json({"draining": True, "was_draining": False, "creates_in_flight": 0,
                                 "stopped": 1, "failed": [{"id": "a", "error": "e"}], "live": 0})
    assert d.failed == [m.DrainFailure(id="a", error="e")]


def test_client_arguments(monkeypatch):
    from paddock_client import AsyncClient, Client

    for bad in ({"url": "https://127.0.0.1:7070"}, {"url": "127.0.0.1:7070"}, {"socket": "/s", "url": "http://h:1"}):
        with pytest.raises(ValueError):
            Client(**bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            AsyncClient(**bad)  # type: ignore[arg-type]
    for k in ("PADDOCK_URL", "PADDOCK_TOKEN", "PADDOCK_SOCKET"):
        monkeypatch.delenv(k, raising=False)
    assert repr(Client()) == "Client('/run/paddock/paddock.sock')"
    monkeypatch.setenv("PADDOCK_SOCKET", "/tmp/x.sock")
    assert repr(Client()) == "Client('/tmp/x.sock')"
    monkeypatch.setenv("PADDOCK_URL", "http://127.0.0.1:7070")
    monkeypatch.setenv("PADDOCK_TOKEN", "t" * 20)
    c = Client()
    assert repr(c) == "Client('http://127.0.0.1:7070')" and c._t.token == "t" * 20
