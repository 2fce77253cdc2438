"""Exceptions: every answer of the daemon with a status of 400 or more raises a
`PaddockError` subclass carrying the API's message (`.message`, the body's `error`) and
the HTTP status (`.status`); failures before an answer raise `TransportError`."""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


class PaddockError(Exception):
    """An error answer of the daemon (or, for `TransportError`, no answer)."""

    #: The HTTP status (None for a `TransportError`).
    status: Optional[int]

    def __init__(
        self,
        message: str,
        status: Optional[int] = None,
        *,
        method: str = "",
        path: str = "",
        body: Optional[Dict[str, Any]] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> None:
        self.message = message
        self.status = status
        self.method = method
        self.path = path
        #: The decoded JSON body of the answer, if it was JSON.
        self.body = body
        #: The answer's headers (names in lower case).
        self.headers = headers or {}
        where = f"{method} {path}: " if method else ""
        code = f"{status} " if status is not None else ""
        super().__init__(f"{where}{code}{message}")


class TransportError(PaddockError):
    """No (valid) answer: cannot connect, the connection broke, or a timeout passed."""


class BadRequest(PaddockError):
    """400: the request breaks the API document (the message names the field)."""


class Unauthorized(PaddockError):
    """401: TCP without the bearer token, or a wrong one."""


class NotFound(PaddockError):
    """404: no such sandbox (or lifecycle)."""


class Conflict(PaddockError):
    """409: the sandbox's state does not allow it (running, not running, still creating)."""


class Gone(PaddockError):
    """410 from the event stream: the events after the cursor are no longer kept.

    Re-list the sandboxes, then follow with `since=last_seq`."""

    @property
    def last_seq(self) -> Optional[int]:
        return (self.body or {}).get("last_seq")

    @property
    def oldest_seq(self) -> Optional[int]:
        return (self.body or {}).get("oldest_seq")


class Unprocessable(PaddockError):
    """422: the fields fit the document but not together, or this node cannot do it."""


class TooManyRequests(PaddockError):
    """429: an admission limit (or a full network pool) refused a create."""


class ServerError(PaddockError):
    """500: the daemon failed (a system call failed unexpectedly)."""


class ServiceUnavailable(PaddockError):
    """503: the node is draining (see `retry_after`), the store refused, or shutting down."""

    @property
    def retry_after(self) -> Optional[str]:
        return self.headers.get("retry-after")


BY_STATUS: Dict[int, Type[PaddockError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Unprocessable,
    429: TooManyRequests,
    500: ServerError,
    503: ServiceUnavailable,
}


def error_for(
    status: int, raw: bytes, method: str, path: str, headers: Dict[str, str]
) -> PaddockError:
    """The exception for an error answer: its class by status, its message from the body."""
    import json

    body: Optional[Dict[str, Any]] = None
    try:
        decoded = json.loads(raw)
        if isinstance(decoded, dict):
            body = decoded
    except ValueError:
        pass
    if body is not None and isinstance(body.get("error"), str):
        message = body["error"]
    else:
        message = raw.decode("utf-8", "replace").strip() or f"HTTP {status}"
    cls = BY_STATUS.get(status, PaddockError)
    return cls(message, status, method=method, path=path, body=body, headers=headers)
