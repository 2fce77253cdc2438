"""A typed Python client for the paddock daemon's HTTP API (sync and asyncio).

    from paddock_client import Client
    c = Client()                                  # the unix socket (or $PADDOCK_URL)
    info = c.create_sandbox({"id": "job-1", "command": "sleep", "args": ["30"]})
    c.stop_sandbox("job-1", timeout="2s")

See README.md; the types are in `paddock_client.models`, the exceptions in
`paddock_client.errors`.
"""

from . import models
from ._ops import OPERATIONS, DurationLike
from .client import DEFAULT_SOCKET, AsyncClient, AsyncEventStream, Client, EventStream
from .errors import (
    BadRequest,
    Conflict,
    Gone,
    NotFound,
    PaddockError,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    TransportError,
    Unauthorized,
    Unprocessable,
)
from .models import (
    DrainReport,
    Event,
    Lagged,
    NodeInfo,
    SandboxInfo,
    SandboxSpec,
    SandboxStats,
    StopReport,
    UndrainReport,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient", "AsyncEventStream", "BadRequest", "Client", "Conflict", "DEFAULT_SOCKET",
    "DrainReport", "DurationLike", "Event", "EventStream", "Gone", "Lagged", "NodeInfo",
    "NotFound", "OPERATIONS", "PaddockError", "SandboxInfo", "SandboxSpec", "SandboxStats",
    "ServerError", "ServiceUnavailable", "StopReport", "TooManyRequests", "TransportError",
    "Unauthorized", "UndrainReport", "Unprocessable", "models", "__version__",
]
