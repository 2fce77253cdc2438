"""`Client` (blocking, `http.client`) and `AsyncClient` (`asyncio` streams): the same
methods, one per operation of the API, over the daemon's unix socket or over TCP with
the bearer token. Standard library only. Each request uses a connection of its own."""

from __future__ import annotations

import asyncio
import http.client
import os
import socket as _socket
import urllib.parse
from typing import Any, AsyncIterator, Awaitable, Dict, Iterator, List, Optional, Tuple, TypeVar

from . import _ops
from . import models as m
from ._ops import DEFAULT, DurationLike, Op, SseParser
from .errors import PaddockError, TransportError, error_for

T = TypeVar("T")

DEFAULT_SOCKET = "/run/paddock/paddock.sock"
USER_AGENT = "paddock-client-python/0.1.0"



class _Target:
    """Where the daemon is: a unix socket, or an http(s) URL with a bearer token."""

    def __init__(
        self,
        socket: Optional[str],
        url: Optional[str],
        token: Optional[str],
        token_file: Optional[str],
        timeout: Optional[float],
    ) -> None:
        if socket is not None and url is not None:
            raise ValueError("give socket or url, not both")
        if token is None and token_file is not None:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        if url is None and socket is None:
            url = os.environ.get("PADDOCK_URL") or None
            if url is None:
                socket = os.environ.get("PADDOCK_SOCKET") or DEFAULT_SOCKET
        if url is not None and token is None:
            token = os.environ.get("PADDOCK_TOKEN") or None
        self.socket = socket
        self.token = token
        self.timeout = timeout
        self.host = "paddock"
        self.port = 0
        if url is not None:
            u = urllib.parse.urlsplit(url)
            # The daemon's TCP listener speaks plain HTTP (put TLS in front of it if needed).
            if u.scheme != "http" or not u.hostname:
                raise ValueError(f"url must be http://HOST:PORT, not {url!r}")
            self.host = u.hostname
            self.port = u.port or 80
        self.where = socket if socket is not None else url

    def headers(self, op: Op[Any]) -> Dict[str, str]:
        h = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.socket is not None:
            h["Host"] = "paddock"
        else:
            h["Host"] = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if self.token is not None:
            h["Authorization"] = "Bearer " + self.token
        if op.body is not None:
            h["Content-Type"] = "application/json"
            h["Content-Length"] = str(len(op.body))
        elif op.method in ("POST", "PATCH", "PUT"):
            h["Content-Length"] = "0"
        h.update(op.headers)
        return h

    def read_timeout(self, op: Op[Any]) -> Optional[float]:
        if op.timeout is DEFAULT:
            return self.timeout
        if op.timeout is None or self.timeout is None:
            return None
        return self.timeout + float(op.timeout[1])


def _check(op: Op[T], status: int, raw: bytes, headers: Dict[str, str]) -> T:
    if status != op.expect:
        if status >= 400:
            raise error_for(status, raw, op.method, op.target, headers)
        raise PaddockError(
            f"unexpected status {status} (expected {op.expect}): {raw[:200]!r}", status,
            method=op.method, path=op.target, headers=headers,
        )
    try:
        return op.parse(raw)
    except (ValueError, TypeError, KeyError) as e:
        raise TransportError(
            f"the daemon's answer could not be read: {e}", status, method=op.method, path=op.target
        ) from e


# --- blocking ----------------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]) -> None:
        super().__init__("paddock", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self._path)
        except BaseException:
            s.close()
            raise
        self.sock = s


class EventStream(Iterator[m.Event]):
    """The event stream (`GET /v1/events`), read as it comes: iterate for `Event`s.
    `last_seq` is the seq of the last event read (give it as `since` to resume);
    `missed` counts the events the daemon could not deliver to this stream (its ring had
    dropped them: the `lagged` items, which are not yielded) - after a rise, re-list the
    sandboxes. Close it (or use `with`) when done."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._resp = resp
        self._sse = SseParser()
        self.last_seq: Optional[int] = None
        self.missed = 0

    def __next__(self) -> m.Event:
        while True:
            try:
                line = self._resp.readline()
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise TransportError(f"the event stream broke: {e}", method="GET", path="/v1/events") from e
            if not line:
                self.close()
                raise StopIteration
            item = self._sse.line(line)
            if item is not None:
                ev = m.parse_event(item.data)
                if isinstance(ev, m.Lagged):
                    self.missed += ev.missed
                    continue
                self.last_seq = ev.seq
                return ev

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Client:
    """A blocking client.

    `Client()` uses `$PADDOCK_URL` (with `$PADDOCK_TOKEN`) if set, else the unix socket
    `$PADDOCK_SOCKET` or `/run/paddock/paddock.sock`. `Client("/path/to.sock")` names the
    socket; `Client(url="http://127.0.0.1:7070", token=...)` (or `token_file=`) uses TCP.
    `timeout` (seconds, None for none) bounds the connect and each read of an answer;
    `wait_sandbox` adds its own `timeout` to it, and `stop_sandbox`, `kill_sandbox` and
    `drain_node` (which answer once the stops are done) have no read deadline.
    """

    def __init__(
        self,
        socket: Optional[str] = None,
        *,
        url: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        timeout: Optional[float] = 30.0,
    ) -> None:
        self._t = _Target(socket, url, token, token_file, timeout)

    def __repr__(self) -> str:
        return f"Client({self._t.where!r})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def _open(self, op: Op[Any]) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        t = self._t
        conn: http.client.HTTPConnection
        if t.socket is not None:
            conn = _UnixConnection(t.socket, t.timeout)
        else:
            conn = http.client.HTTPConnection(t.host, t.port, timeout=t.timeout)
        try:
            conn.connect()
            conn.request(op.method, op.target, body=op.body, headers=t.headers(op))
            if conn.sock is not None:
                conn.sock.settimeout(t.read_timeout(op))
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise TransportError(
                f"the paddock daemon at {t.where} did not answer: {e!r}", method=op.method, path=op.target
            ) from e
        return conn, resp

    def _run(self, op: Op[T]) -> T:
        conn, resp = self._open(op)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise TransportError(
                f"the answer of the paddock daemon at {self._t.where} broke off: {e!r}",
                method=op.method, path=op.target,
            ) from e
        finally:
            conn.close()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return _check(op, resp.status, raw, headers)

    # --- sandboxes ---

    def create_sandbox(self, spec: m.CreateRequest) -> m.SandboxInfo:
        """Create and start a sandbox (`POST /v1/sandboxes`) -> 201."""
        return self._run(_ops.create_sandbox(spec))

    def list_sandboxes(self, label: Optional[List[str]] = None) -> List[m.SandboxInfo]:
        """Every known lifecycle, or those whose labels match every selector."""
        return self._run(_ops.list_sandboxes(label))

    def get_sandbox(self, id: str, lifecycle: Optional[str] = None) -> m.SandboxInfo:
        return self._run(_ops.get_sandbox(id, lifecycle))

    def update_sandbox(self, id: str, limits: m.LimitsUpdate) -> m.SandboxInfo:
        """Change the limits of a running sandbox (`PATCH`)."""
        return self._run(_ops.update_sandbox(id, limits))

    def delete_sandbox(self, id: str, lifecycle: Optional[str] = None) -> None:
        """Forget a stopped or failed sandbox and its log -> 204."""
        return self._run(_ops.delete_sandbox(id, lifecycle))

    def stop_sandbox(
        self, id: str, timeout: Optional[DurationLike] = None, lifecycle: Optional[str] = None
    ) -> m.StopReport:
        """Graceful stop (`timeout`: the grace period instead of the sandbox's); waits."""
        return self._run(_ops.stop_sandbox(id, timeout, lifecycle))

    def kill_sandbox(self, id: str, lifecycle: Optional[str] = None) -> m.StopReport:
        """Stop without grace; waits."""
        return self._run(_ops.kill_sandbox(id, lifecycle))

    def wait_sandbox(
        self, id: str, timeout: Optional[DurationLike] = None, lifecycle: Optional[str] = None
    ) -> m.SandboxInfo:
        """Until the lifecycle has ended, or `timeout` passed (then it shows it live)."""
        return self._run(_ops.wait_sandbox(id, timeout, lifecycle))

    def pause_sandbox(self, id: str, lifecycle: Optional[str] = None) -> m.SandboxInfo:
        return self._run(_ops.pause_sandbox(id, lifecycle))

    def resume_sandbox(self, id: str, lifecycle: Optional[str] = None) -> m.SandboxInfo:
        return self._run(_ops.resume_sandbox(id, lifecycle))

    def extend_sandbox_deadline(self, id: str, extend: DurationLike) -> m.SandboxInfo:
        return self._run(_ops.extend_sandbox_deadline(id, extend))

    def sandbox_stats(self, id: str, lifecycle: Optional[str] = None) -> m.SandboxStats:
        return self._run(_ops.sandbox_stats(id, lifecycle))

    def sandbox_logs(self, id: str, lifecycle: Optional[str] = None) -> str:
        return self._run(_ops.sandbox_logs(id, lifecycle))

    def events(
        self, id: Optional[str] = None, since: Optional[int] = None, last_event_id: Optional[str] = None
    ) -> EventStream:
        """Follow the events (`with client.events(id=...) as s: for ev in s: ...`): from the
        next one committed, or after `since` (0: from the first kept)."""
        op = _ops.events(id, since, last_event_id)
        conn, resp = self._open(op)
        if resp.status != 200:
            try:
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                raw = b""
            conn.close()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            raise error_for(resp.status, raw, op.method, op.target, headers)
        return EventStream(conn, resp)

    # --- the node and the daemon ---

    def node_info(self) -> m.NodeInfo:
        return self._run(_ops.node_info())

    def drain_node(self, stop: Optional[bool] = None, grace: Optional[DurationLike] = None) -> m.DrainReport:
        """Refuse every create from now on; with `stop`, stop every sandbox too."""
        return self._run(_ops.drain_node(stop, grace))

    def undrain_node(self) -> m.UndrainReport:
        return self._run(_ops.undrain_node())

    def healthz(self) -> m.StatusBody:
        return self._run(_ops.healthz())

    def readyz(self) -> m.StatusBody:
        return self._run(_ops.readyz())

    def metrics(self) -> str:
        """The Prometheus / OpenMetrics text."""
        return self._run(_ops.metrics())

    def openapi(self) -> Dict[str, Any]:
        """The OpenAPI document the daemon serves."""
        return self._run(_ops.openapi())


# --- asyncio -----------------------------------------------------------------------------


class _AsyncResponse:
    """An HTTP/1.1 answer read from an asyncio stream (Content-Length, chunked, or to EOF)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: Optional[float]) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.status = 0
        self.headers: Dict[str, str] = {}
        self._chunked = False
        self._left: Optional[int] = None  # bytes left of a Content-Length body or a chunk
        self._done = False
        self._buf = b""

    async def _io(self, aw: Awaitable[T]) -> T:
        return await asyncio.wait_for(aw, self.timeout)

    async def start(self) -> None:
        line = await self._io(self.reader.readline())
        parts = line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError(f"not an HTTP answer: {line[:100]!r}")
        self.status = int(parts[1])
        while True:
            h = await self._io(self.reader.readline())
            if h in (b"\r\n", b"\n"):
                break
            if not h:
                raise ValueError("the answer's head broke off")
            k, _, v = h.decode("latin-1").partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if not self._chunked and "content-length" in self.headers:
            self._left = int(self.headers["content-length"])
        if self.status in (204, 304):
            self._done = True

    async def _piece(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        if self._done:
            return b""
        if self._chunked:
            if not self._left:
                size = await self._io(self.reader.readline())
                n = int(size.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while (await self._io(self.reader.readline())) not in (b"\r\n", b"\n", b""):
                        pass
                    self._done = True
                    return b""
                self._left = n
            data = await self._io(self.reader.read(self._left))
            if not data:
                raise ValueError("the answer broke off inside a chunk")
            self._left -= len(data)
            if self._left == 0:
                await self._io(self.reader.readline())
            return data
        if self._left is not None:
            if self._left == 0:
                self._done = True
                return b""
            data = await self._io(self.reader.read(min(self._left, 65536)))
            if not data:
                raise ValueError("the answer broke off")
            self._left -= len(data)
            return data
        data = await self._io(self.reader.read(65536))
        if not data:
            self._done = True
        return data

    async def read(self) -> bytes:
        out = [self._buf]
        self._buf = b""
        while True:
            p = await self._piece()
            if not p:
                return b"".join(out)
            out.append(p)

    async def readline(self) -> bytes:
        while b"\n" not in self._buf:
            p = await self._piece()
            if not p:
                line, self._buf = self._buf, b""
                return line
            self._buf += p
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    def close(self) -> None:
        self.writer.close()


class AsyncEventStream(AsyncIterator[m.Event]):
    """The event stream for `AsyncClient`:
    `async with client.events(id=...) as s: async for ev in s: ...`; `last_seq` and
    `missed` as in `EventStream`."""

    def __init__(self, client: "AsyncClient", op: Op[None]) -> None:
        self._client = client
        self._op = op
        self._resp: Optional[_AsyncResponse] = None
        self._sse = SseParser()
        self.last_seq: Optional[int] = None
        self.missed = 0

    async def open(self) -> "AsyncEventStream":
        """Sends the request; raises the API's error if the daemon refuses the stream."""
        if self._resp is None:
            resp = await self._client._open(self._op)
            if resp.status != 200:
                try:
                    raw = await resp.read()
                except (OSError, ValueError, asyncio.TimeoutError):
                    raw = b""
                resp.close()
                raise error_for(resp.status, raw, self._op.method, self._op.target, resp.headers)
            self._resp = resp
        return self

    async def __anext__(self) -> m.Event:
        await self.open()
        assert self._resp is not None
        while True:
            try:
                line = await self._resp.readline()
            except (OSError, ValueError, asyncio.TimeoutError) as e:
                self.close()
                raise TransportError(f"the event stream broke: {e!r}", method="GET", path="/v1/events") from e
            if not line:
                self.close()
                raise StopAsyncIteration
            item = self._sse.line(line)
            if item is not None:
                ev = m.parse_event(item.data)
                if isinstance(ev, m.Lagged):
                    self.missed += ev.missed
                    continue
                self.last_seq = ev.seq
                return ev

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()

    async def aclose(self) -> None:
        if self._resp is not None:
            self._resp.close()
            try:
                await self._resp.writer.wait_closed()
            except OSError:
                pass

    async def __aenter__(self) -> "AsyncEventStream":
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class AsyncClient:
    """The asyncio client: the arguments and methods of `Client`, as coroutines."""

    def __init__(
        self,
        socket: Optional[str] = None,
        *,
        url: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        timeout: Optional[float] = 30.0,
    ) -> None:
        self._t = _Target(socket, url, token, token_file, timeout)

    def __repr__(self) -> str:
        return f"AsyncClient({self._t.where!r})"

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        pass

    async def _open(self, op: Op[Any]) -> _AsyncResponse:
        t = self._t
        try:
            if t.socket is not None:
                conn = asyncio.open_unix_connection(t.socket)
            else:
                conn = asyncio.open_connection(t.host, t.port)
            reader, writer = await asyncio.wait_for(conn, t.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise TransportError(
                f"the paddock daemon at {t.where} did not answer: {e!r}", method=op.method, path=op.target
            ) from e
        resp = _AsyncResponse(reader, writer, t.read_timeout(op))
        try:
            head = [f"{op.method} {op.target} HTTP/1.1"]
            head += [f"{k}: {v}" for k, v in t.headers(op).items()]
            head += ["Connection: close", "", ""]
            writer.write("\r\n".join(head).encode("latin-1") + (op.body or b""))
            await asyncio.wait_for(writer.drain(), t.timeout)
            await resp.start()
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            resp.close()
            raise TransportError(
                f"the paddock daemon at {t.where} did not answer: {e!r}", method=op.method, path=op.target
            ) from e
        return resp

    async def _run(self, op: Op[T]) -> T:
        resp = await self._open(op)
        try:
            raw = await resp.read()
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            raise TransportError(
                f"the answer of the paddock daemon at {self._t.where} broke off: {e!r}",
                method=op.method, path=op.target,
            ) from e
        finally:
            resp.close()
        return _check(op, resp.status, raw, resp.headers)

    # --- sandboxes ---

    async def create_sandbox(self, spec: m.CreateRequest) -> m.SandboxInfo:
        return await self._run(_ops.create_sandbox(spec))

    async def list_sandboxes(self, label: Optional[List[str]] = None) -> List[m.SandboxInfo]:
        return await self._run(_ops.list_sandboxes(label))

    async def get_sandbox(self, id: str, lifecycle: Optional[str] = None) -> m.SandboxInfo:
        return await self._run(_ops.get_sandbox(id, lifecycle))

    async def update_sandbox(self, id: str, limits: m.LimitsUpdate) -> m.SandboxInfo:
        return await self._run(_ops.update_sandbox(id, limits))

    async def delete_sandbox(self, id: str, lifecycle: Optional[str] = None) -> None:
        return await self._run(_ops.delete_sandbox(id, lifecycle))

    async def stop_sandbox(
        self, id: str, timeout: Optional[DurationLike] = None, lifecycle: Optional[str] = None
    ) -> m.StopReport:
        return await self._run(_ops.stop_sandbox(id, timeout, lifecycle))

    async def kill_sandbox(self, id: str, lifecycle: Optional[str] = None) -> m.StopReport:
        return await self._run(_ops.kill_sandbox(id, lifecycle))

    async def wait_sandbox(
        self, id: str, timeout: Optional[DurationLike] = None, lifecycle: Optional[str] = None
    ) -> m.SandboxInfo:
        return await self._run(_ops.wait_sandbox(id, timeout, lifecycle))

    async def pause_sandbox(self, id: str, lifecycle: Optional[str] = None) -> m.SandboxInfo:
        return await self._run(_ops.pause_sandbox(id, lifecycle))

    async def resume_sandbox(self, id: str, lifecycle: Optional[str] = None) -> m.SandboxInfo:
        return await self._run(_ops.resume_sandbox(id, lifecycle))

    async def extend_sandbox_deadline(self, id: str, extend: DurationLike) -> m.SandboxInfo:
        return await self._run(_ops.extend_sandbox_deadline(id, extend))

    async def sandbox_stats(self, id: str, lifecycle: Optional[str] = None) -> m.SandboxStats:
        return await self._run(_ops.sandbox_stats(id, lifecycle))

    async def sandbox_logs(self, id: str, lifecycle: Optional[str] = None) -> str:
        return await self._run(_ops.sandbox_logs(id, lifecycle))

    def events(
        self, id: Optional[str] = None, since: Optional[int] = None, last_event_id: Optional[str] = None
    ) -> AsyncEventStream:
        """The event stream (not sent until entered or iterated; `await s.open()` sends it)."""
        return AsyncEventStream(self, _ops.events(id, since, last_event_id))

    # --- the node and the daemon ---

    async def node_info(self) -> m.NodeInfo:
        return await self._run(_ops.node_info())

    async def drain_node(
        self, stop: Optional[bool] = None, grace: Optional[DurationLike] = None
    ) -> m.DrainReport:
        return await self._run(_ops.drain_node(stop, grace))

    async def undrain_node(self) -> m.UndrainReport:
        return await self._run(_ops.undrain_node())

    async def healthz(self) -> m.StatusBody:
        return await self._run(_ops.healthz())

    async def readyz(self) -> m.StatusBody:
        return await self._run(_ops.readyz())

    async def metrics(self) -> str:
        return await self._run(_ops.metrics())

    async def openapi(self) -> Dict[str, Any]:
        return await self._run(_ops.openapi())
