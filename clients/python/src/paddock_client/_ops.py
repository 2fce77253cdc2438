"""Every operation of the API as a request description, shared by `Client` and
`AsyncClient` (which only differ in how they send it). `OPERATIONS` maps each
(method, path template) of the document to the client method that calls it."""

from __future__ import annotations

import datetime
import json
import math
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generic, List, Optional, Tuple, TypeVar, Union

from . import models as m

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: (method, path template) -> name of the client method (`Client` and `AsyncClient`).
OPERATIONS: Dict[Tuple[str, str], str] = {}

#: A duration: `"10s"`, `"500ms"`, `"2m"`, `"1.5h"` (sent as it is), seconds as a number,
#: or a `datetime.timedelta`.
DurationLike = Union[str, int, float, datetime.timedelta]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: The client's own timeout (its `timeout` argument).
DEFAULT: Any = _Default()


@dataclass
class Op(Generic[T]):
    method: str
    path: str  # the template, as in the document
    args: Dict[str, str] = field(default_factory=dict)  # path parameters
    query: List[Tuple[str, str]] = field(default_factory=list)
    body: Optional[bytes] = None
    headers: Dict[str, str] = field(default_factory=dict)
    parse: Callable[[bytes], T] = lambda raw: None  # type: ignore[assignment,return-value]
    #: Seconds to wait for each read of the answer: DEFAULT (the client's), a number, or
    #: None (no limit: a wait without timeout, a stop in its grace period).
    timeout: Any = DEFAULT
    expect: int = 200

    @property
    def target(self) -> str:
        path = self.path
        for k, v in self.args.items():
            path = path.replace("{" + k + "}", urllib.parse.quote(v, safe=""))
        if self.query:
            path += "?" + urllib.parse.urlencode(self.query)
        return path


def operation(method: str, path: str) -> Callable[[F], F]:
    def register(f: F) -> F:
        OPERATIONS[(method, path)] = f.__name__
        return f

    return register


def duration(d: DurationLike) -> str:
    """A duration as the API writes it."""
    if isinstance(d, str):
        return d
    if isinstance(d, datetime.timedelta):
        d = d.total_seconds()
    if isinstance(d, bool) or not isinstance(d, (int, float)) or d < 0 or math.isnan(d):
        raise ValueError(f"a duration must be a non-negative number of seconds or a string, not {d!r}")
    ms = d * 1000
    if ms == int(ms):
        return f"{int(ms)}ms"
    return f"{ms:.3f}".rstrip("0") + "ms"


def seconds(d: DurationLike) -> float:
    """A duration in seconds (for the client's own read deadline)."""
    if isinstance(d, datetime.timedelta):
        return d.total_seconds()
    if isinstance(d, (int, float)):
        return float(d)
    s = d.strip()
    for unit, mult in (("ms", 0.001), ("min", 60.0), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if s.endswith(unit):
            try:
                return float(s[: -len(unit)]) * mult
            except ValueError:
                break
    try:
        return float(s)
    except ValueError:
        return 0.0  # the daemon answers the malformed duration with a 400


def _json(raw: bytes) -> Any:
    return json.loads(raw)


def _body(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _q(**kv: Any) -> List[Tuple[str, str]]:
    return [(k, str(v)) for k, v in kv.items() if v is not None]


def _info(raw: bytes) -> m.SandboxInfo:
    return m.SandboxInfo.from_json(_json(raw))


def _report(raw: bytes) -> m.StopReport:
    return m.StopReport.from_json(_json(raw))


# --- the operations (named after the document's operationId) ----------------------------


@operation("GET", "/healthz")
def healthz() -> Op[m.StatusBody]:
    return Op("GET", "/healthz", parse=lambda r: m.StatusBody.from_json(_json(r)))


@operation("GET", "/readyz")
def readyz() -> Op[m.StatusBody]:
    return Op("GET", "/readyz", parse=lambda r: m.StatusBody.from_json(_json(r)))


@operation("GET", "/metrics")
def metrics() -> Op[str]:
    return Op("GET", "/metrics", parse=lambda r: r.decode())


@operation("GET", "/v1/openapi.json")
def openapi() -> Op[Dict[str, Any]]:
    return Op("GET", "/v1/openapi.json", parse=_json)


@operation("GET", "/v1/node")
def node_info() -> Op[m.NodeInfo]:
    return Op("GET", "/v1/node", parse=lambda r: m.NodeInfo.from_json(_json(r)))


@operation("POST", "/v1/node/drain")
def drain_node(stop: Optional[bool] = None, grace: Optional[DurationLike] = None) -> Op[m.DrainReport]:
    req: m.DrainRequest = {}
    if stop is not None:
        req["stop"] = stop
    if grace is not None:
        req["grace"] = duration(grace)
    return Op(
        "POST", "/v1/node/drain", body=_body(req), timeout=None,
        parse=lambda r: m.DrainReport.from_json(_json(r)),
    )


@operation("POST", "/v1/node/undrain")
def undrain_node() -> Op[m.UndrainReport]:
    return Op("POST", "/v1/node/undrain", parse=lambda r: m.UndrainReport.from_json(_json(r)))


@operation("GET", "/v1/sandboxes")
def list_sandboxes(label: Optional[List[str]] = None) -> Op[List[m.SandboxInfo]]:
    if isinstance(label, str):
        label = [label]
    return Op(
        "GET", "/v1/sandboxes", query=[("label", s) for s in label or []],
        parse=lambda r: [m.SandboxInfo.from_json(o) for o in _json(r)],
    )


@operation("POST", "/v1/sandboxes")
def create_sandbox(spec: m.CreateRequest) -> Op[m.SandboxInfo]:
    return Op("POST", "/v1/sandboxes", body=_body(spec), parse=_info, expect=201)


@operation("GET", "/v1/sandboxes/{id}")
def get_sandbox(id: str, lifecycle: Optional[str] = None) -> Op[m.SandboxInfo]:
    return Op("GET", "/v1/sandboxes/{id}", {"id": id}, _q(lifecycle=lifecycle), parse=_info)


@operation("PATCH", "/v1/sandboxes/{id}")
def update_sandbox(id: str, limits: m.LimitsUpdate) -> Op[m.SandboxInfo]:
    req: m.UpdateRequest = {"limits": limits}
    return Op("PATCH", "/v1/sandboxes/{id}", {"id": id}, body=_body(req), parse=_info)


@operation("DELETE", "/v1/sandboxes/{id}")
def delete_sandbox(id: str, lifecycle: Optional[str] = None) -> Op[None]:
    return Op(
        "DELETE", "/v1/sandboxes/{id}", {"id": id}, _q(lifecycle=lifecycle),
        parse=lambda r: None, expect=204,
    )


@operation("POST", "/v1/sandboxes/{id}/stop")
def stop_sandbox(
    id: str, timeout: Optional[DurationLike] = None, lifecycle: Optional[str] = None
) -> Op[m.StopReport]:
    q = _q(lifecycle=lifecycle, timeout=None if timeout is None else duration(timeout))
    # The stop answers after the grace period and the kill: no read deadline of ours.
    return Op("POST", "/v1/sandboxes/{id}/stop", {"id": id}, q, parse=_report, timeout=None)


@operation("POST", "/v1/sandboxes/{id}/kill")
def kill_sandbox(id: str, lifecycle: Optional[str] = None) -> Op[m.StopReport]:
    return Op(
        "POST", "/v1/sandboxes/{id}/kill", {"id": id}, _q(lifecycle=lifecycle),
        parse=_report, timeout=None,
    )


@operation("GET", "/v1/sandboxes/{id}/wait")
def wait_sandbox(
    id: str, timeout: Optional[DurationLike] = None, lifecycle: Optional[str] = None
) -> Op[m.SandboxInfo]:
    q = _q(lifecycle=lifecycle, timeout=None if timeout is None else duration(timeout))
    read: Any = None if timeout is None else ("+", seconds(timeout))
    return Op("GET", "/v1/sandboxes/{id}/wait", {"id": id}, q, parse=_info, timeout=read)


@operation("POST", "/v1/sandboxes/{id}/pause")
def pause_sandbox(id: str, lifecycle: Optional[str] = None) -> Op[m.SandboxInfo]:
    return Op("POST", "/v1/sandboxes/{id}/pause", {"id": id}, _q(lifecycle=lifecycle), parse=_info)


@operation("POST", "/v1/sandboxes/{id}/resume")
def resume_sandbox(id: str, lifecycle: Optional[str] = None) -> Op[m.SandboxInfo]:
    return Op("POST", "/v1/sandboxes/{id}/resume", {"id": id}, _q(lifecycle=lifecycle), parse=_info)


@operation("POST", "/v1/sandboxes/{id}/deadline")
def extend_sandbox_deadline(id: str, extend: DurationLike) -> Op[m.SandboxInfo]:
    return Op(
        "POST", "/v1/sandboxes/{id}/deadline", {"id": id}, [("extend", duration(extend))],
        parse=_info,
    )


@operation("GET", "/v1/sandboxes/{id}/stats")
def sandbox_stats(id: str, lifecycle: Optional[str] = None) -> Op[m.SandboxStats]:
    return Op(
        "GET", "/v1/sandboxes/{id}/stats", {"id": id}, _q(lifecycle=lifecycle),
        parse=lambda r: m.SandboxStats.from_json(_json(r)),
    )


@operation("GET", "/v1/sandboxes/{id}/logs")
def sandbox_logs(id: str, lifecycle: Optional[str] = None) -> Op[str]:
    return Op(
        "GET", "/v1/sandboxes/{id}/logs", {"id": id}, _q(lifecycle=lifecycle),
        parse=lambda r: r.decode("utf-8", "replace"),
    )


@operation("GET", "/v1/events")
def events(
    id: Optional[str] = None, since: Optional[int] = None, last_event_id: Optional[str] = None
) -> Op[None]:
    """The stream's request; the clients read its answer as server-sent events."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return Op("GET", "/v1/events", query=_q(id=id, since=since), headers=headers)


class SseParser:
    """Server-sent events (the WHATWG rules the daemon's stream needs): feed it lines."""

    def __init__(self) -> None:
        self.event = ""
        self.data: List[str] = []
        self.id: Optional[str] = None

    def line(self, raw: bytes) -> Optional[m.EventStreamItem]:
        """One line (with or without its end); an item when a blank line ends one."""
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        if text == "":
            item = None
            if self.data:
                item = m.EventStreamItem(
                    event=self.event or "message", data="\n".join(self.data), id=self.id
                )
            self.event, self.data, self.id = "", [], None
            return item
        if text.startswith(":"):
            return None  # a comment: the keep-alive
        name, _, value = text.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id":
            self.id = value
        return None
