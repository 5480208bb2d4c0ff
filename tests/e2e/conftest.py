"""API fixtures: the real Auth emulator, and the API served by uvicorn over HTTP on a free port.

`auth_emulator` (session): FIREBASE_AUTH_EMULATOR_HOST, else the `boxoffice dev up` one, else our
own (started once; firebase-tools is installed with `npm ci` if missing).
`api` (session): base URL of the API, talking to the session's Firestore emulator.
`user` / `organiser` (function): factories of signed-in users (uid, emulator-issued ID token).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest


@pytest.fixture(scope="session")
def auth_emulator(stack):
    from boxoffice.runtime.auth_emulator import running_auth_emulator

    with running_auth_emulator(stack.project) as emu:
        yield emu


@pytest.fixture(scope="session")
def api(stack, auth_emulator) -> Iterator[str]:
    import uvicorn

    from boxoffice.api.app import create_app
    from boxoffice.runtime.emulators import firestore_client

    app = create_app(db=firestore_client(stack), project=stack.project)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


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
    from boxoffice.runtime.emulator_users import set_claims, sign_in, sign_up

    def make(organiser: bool = False) -> User:
        email = f"u{uuid.uuid4().hex[:10]}@example.com"
        uid, token = sign_up(auth_emulator.host, email)
        if organiser:
            set_claims(auth_emulator.host, stack.project, uid, {"organiser": True})
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


@pytest.fixture
def event_of(http) -> Callable[..., dict]:
    def make(owner: User, **overrides: object) -> dict:
        r = http.post("/v1/events", json=EVENT | overrides, headers=owner.headers)
        assert r.status_code == 201, r.text
        return r.json()

    return make
