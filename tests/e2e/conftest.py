"""API fixtures: the real Auth emulator, and the API served by uvicorn over HTTP on a free port.

`auth_emulator` (session): FIREBASE_AUTH_EMULATOR_HOST, else the `boxoffice dev up` one, else our
own (started once; firebase-tools is installed with `npm ci` if missing).
`api` (session): base URL of the API, talking to the session's Firestore emulator.
`user` (function): a factory of signed-in users (uid, emulator-issued ID token); `organiser=True`
adds the claim, `verified=True` marks the email address verified.
`event_of` (function): an organiser creates an event; the result remembers its `owner`.
`dump` (function): every document of the database with its update time, to show that a refused
request wrote nothing.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest


@pytest.fixture(scope="session")
def auth_emulator(stack):
    from boxoffice.runtime.auth_emulator import running_auth_emulator

    with running_auth_emulator(stack.project) as emu:
        yield emu


@contextmanager
def served(app) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free 127.0.0.1 port (a thread); yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           proxy_headers=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def api(stack, auth_emulator) -> Iterator[str]:
    """The session's API, not rate-limited: the suite's requests all come from 127.0.0.1 and some
    tests make many at once (test_rate_limits.py serves its own limited apps)."""
    from boxoffice.api.app import create_app
    from boxoffice.api.ratelimit import RateLimits
    from boxoffice.runtime.emulators import firestore_client

    app = create_app(db=firestore_client(stack), project=stack.project,
                     rate_limits=RateLimits.off())
    with served(app) as url:
        yield url


@dataclass(frozen=True)
class User:
    uid: str
    token: str
    email: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def user(auth_emulator, stack) -> Callable[..., User]:
    from boxoffice.runtime.emulator_users import set_claims, sign_in, sign_up, verify_email

    def make(organiser: bool = False, verified: bool = False) -> User:
        email = f"u{uuid.uuid4().hex[:10]}@example.com"
        uid, token = sign_up(auth_emulator.host, email)
        if organiser:
            set_claims(auth_emulator.host, stack.project, uid, {"organiser": True})
        if verified:
            verify_email(auth_emulator.host, stack.project, uid)
        if organiser or verified:
            token = sign_in(auth_emulator.host, email)
        return User(uid, token, email)

    return make


@pytest.fixture
def http(api, db) -> Iterator[httpx.Client]:
    """An HTTP client of the API; Firestore is clean (the `db` fixture clears it)."""
    with httpx.Client(base_url=api, timeout=30) as client:
        yield client


EVENT = {
    "name": "Night at the Opera", "venue": "Hall 1", "starts_at": "2030-05-01T20:00:00+02:00",
    "price": 2500, "currency": "EUR", "capacity": 20, "per_order_max": 4, "per_user_limit": 4,
}


class CreatedEvent(dict):
    """An event as the API answered its creation, and the organiser who created it."""

    owner: User


@pytest.fixture
def event_of(http) -> Callable[..., CreatedEvent]:
    def make(owner: User, **overrides: object) -> CreatedEvent:
        r = http.post("/v1/events", json=EVENT | overrides, headers=owner.headers)
        assert r.status_code == 201, r.text
        event = CreatedEvent(r.json())
        event.owner = owner
        return event

    return make


def database_dump(stack) -> dict[str, str]:
    """Every document (path -> update time), from one kindless query on the emulator (rules
    bypassed with the emulator's owner token). Equal dumps: nothing was created, changed or deleted."""
    r = httpx.post(
        f"http://{stack.firestore_host}/v1/projects/{stack.project}/databases/(default)/documents:runQuery",
        json={"structuredQuery": {"from": [{"allDescendants": True}]}},
        headers={"Authorization": "Bearer owner"}, timeout=60)
    r.raise_for_status()
    paths = {row["document"]["name"].split("/documents/", 1)[1]: row["document"]["updateTime"]
             for row in r.json() if "document" in row}
    # The allocator's lease is renewed in the background, whatever the requests do.
    return {p: t for p, t in paths.items() if not p.startswith(BACKGROUND)}


BACKGROUND = ("allocator_leases/",)


def without_queue_records(dump: dict[str, str]) -> dict[str, str]:
    """A refusal that depends on the sale's state (409: sold out, limit) is decided by the
    allocator, which records the request and its answer in requests/{id} (so a retry or a poll
    gets the same answer); nothing else may change."""
    return {p: t for p, t in dump.items() if not p.startswith("requests/")}


@pytest.fixture
def dump(stack) -> Callable[[], dict[str, str]]:
    return lambda: database_dump(stack)


class HeldQueue:
    """Purchases are queued, not answered: see the `held_queue` fixture."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.allocators = None

    def backlog(self, event_id: str, count: int) -> None:
        """``count`` requests of other buyers, published by another process, ahead of what comes next."""
        import os
        import subprocess
        import sys

        env = dict(os.environ, PUBSUB_EMULATOR_HOST=self.stack.pubsub_host,
                   FIRESTORE_EMULATOR_HOST=self.stack.firestore_host)
        script = "import sys; from boxoffice.loadtest.browser import queue_backlog; " \
                 "queue_backlog(sys.argv[1], sys.argv[2], int(sys.argv[3]))"
        out = subprocess.run([sys.executable, "-c", script, self.stack.project, event_id, str(count)],
                             env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr

    def start_slow_allocator(self) -> None:
        """An allocator process that answers one request per commit, so a backlog takes a while."""
        from boxoffice.loadtest.browser import SLOW_ALLOCATOR
        from boxoffice.runtime.allocator import AllocatorProcesses

        self.allocators = AllocatorProcesses(self.stack.firestore_host, self.stack.pubsub_host, self.stack.project,
                                             settings=SLOW_ALLOCATOR | {"BOXOFFICE_ALLOCATOR_SUMMARY": "off"}).start()


@pytest.fixture
def held_queue(stack, allocator, monkeypatch) -> Iterator[HeldQueue]:
    """The session's allocator is stopped (it gives its leases back) and the API answers 202 after
    0.3 s, so purchases wait in the queue; `start_slow_allocator()` lets them be answered. The
    session's allocator comes back for the next test."""
    allocator.stop()
    monkeypatch.setenv("BOXOFFICE_API_WAIT_S", "0.3")
    held = HeldQueue(stack)
    try:
        yield held
    finally:
        if held.allocators is not None:
            held.allocators.stop()
        allocator.ensure_running()
