"""Fixtures for the tests against a real daemon, which `run-tests` starts and names:

    PADDOCK_TEST_SOCKET      its unix socket
    PADDOCK_TEST_URL         its TCP listener, http://127.0.0.1:PORT
    PADDOCK_TEST_TOKEN_FILE  the bearer token's file

Without them the daemon tests are skipped (failed with PADDOCK_TEST_REQUIRE=1); the drift
check (test_drift.py) needs no daemon. Each test makes sandboxes with IDs of its own
(`sandbox_id`), and its teardown kills and deletes whatever of them is left."""

from __future__ import annotations

import os
import uuid

import pytest

from paddock_client import AsyncClient, Client, NotFound, PaddockError

SOCKET = os.environ.get("PADDOCK_TEST_SOCKET")
URL = os.environ.get("PADDOCK_TEST_URL")
TOKEN_FILE = os.environ.get("PADDOCK_TEST_TOKEN_FILE")
REQUIRE = os.environ.get("PADDOCK_TEST_REQUIRE") == "1"


def daemon_or_skip() -> None:
    if SOCKET and URL and TOKEN_FILE:
        return
    msg = "no daemon: run clients/python/run-tests (sets PADDOCK_TEST_SOCKET, _URL, _TOKEN_FILE)"
    if REQUIRE:
        pytest.fail(msg + " [PADDOCK_TEST_REQUIRE=1]")
    pytest.skip(msg)


def make_client(transport: str, cls=Client, **kw):
    daemon_or_skip()
    if transport == "unix":
        return cls(SOCKET, **kw)
    return cls(url=URL, token_file=TOKEN_FILE, **kw)


@pytest.fixture(params=["unix", "tcp"])
def transport(request) -> str:
    return request.param


@pytest.fixture
def client(transport) -> Client:
    return make_client(transport)


@pytest.fixture
def aclient(transport) -> AsyncClient:
    return make_client(transport, AsyncClient)


@pytest.fixture
def sandbox_id(request):
    """A function making fresh sandbox IDs; the teardown removes their sandboxes."""
    daemon_or_skip()
    made: list[str] = []
    base = request.node.name.split("[")[0].replace("test_", "")[:40]

    def new(tag: str = "") -> str:
        sid = f"py-{base}{'-' + tag if tag else ''}-{uuid.uuid4().hex[:8]}"
        made.append(sid)
        return sid

    yield new
    c = Client(SOCKET)
    for sid in made:
        try:
            c.kill_sandbox(sid)
        except NotFound:
            continue
        except PaddockError:
            pass
        try:
            c.delete_sandbox(sid)
        except NotFound:
            pass
