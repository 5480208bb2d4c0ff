"""Users and ID tokens on the Firebase Auth emulator, for tests, the demo and the simulator.

``sign_up`` goes through the emulator's REST API exactly as a web client would and returns the
ID token the emulator issued. ``mint_tokens`` makes N users fast: it creates them in batches of
1,000 (one request each, firebase-admin ``import_users``) and builds their ID tokens locally in
the emulator's own format (the emulator's tokens are unsigned, ``alg: none``), so 10,000 users
take a few seconds instead of 10,000 sign-in requests. Both kinds pass the API's verifier only
because the users exist in the emulator with those claims. Emulator only: never production.
"""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any

import httpx

API_KEY = "fake-api-key"  # the emulator accepts any key


def _url(host: str, path: str) -> str:
    return f"http://{host}/identitytoolkit.googleapis.com/v1/{path}?key={API_KEY}"


def sign_up(host: str, email: str, password: str = "secret-password") -> tuple[str, str]:
    """Create a user with email and password; returns (uid, emulator-issued ID token)."""
    r = httpx.post(_url(host, "accounts:signUp"),
                   json={"email": email, "password": password, "returnSecureToken": True}, timeout=30)
    r.raise_for_status()
    body = r.json()
    return body["localId"], body["idToken"]


def sign_in(host: str, email: str, password: str = "secret-password") -> str:
    """A fresh ID token (it carries the user's current custom claims)."""
    r = httpx.post(_url(host, "accounts:signInWithPassword"),
                   json={"email": email, "password": password, "returnSecureToken": True}, timeout=30)
    r.raise_for_status()
    return str(r.json()["idToken"])


def set_claims(host: str, project: str, uid: str, claims: dict[str, Any]) -> None:
    """Set custom claims through the emulator's admin endpoint (what firebase-admin does)."""
    r = httpx.post(f"http://{host}/identitytoolkit.googleapis.com/v1/projects/{project}/accounts:update",
                   json={"localId": uid, "customAttributes": json.dumps(claims)},
                   headers={"Authorization": "Bearer owner"}, timeout=30)
    r.raise_for_status()


def ensure_organiser(host: str, project: str, email: str, password: str) -> str:
    """An account with the ``organiser`` claim (created if missing); returns its uid."""
    r = httpx.post(_url(host, "accounts:signUp"),
                   json={"email": email, "password": password, "returnSecureToken": True}, timeout=30)
    if r.status_code == 400 and "EMAIL_EXISTS" in r.text:
        r = httpx.post(_url(host, "accounts:signInWithPassword"),
                       json={"email": email, "password": password, "returnSecureToken": True}, timeout=30)
    r.raise_for_status()
    uid = str(r.json()["localId"])
    set_claims(host, project, uid, {"organiser": True})
    return uid


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def emulator_token(project: str, uid: str, *, claims: dict[str, Any] | None = None,
                   issued_at: float | None = None, lifetime_s: int = 3600) -> str:
    """An ID token in the Auth emulator's format (unsigned) for ``uid``."""
    iat = int(issued_at if issued_at is not None else math.ceil(time.time()))
    payload = {
        **(claims or {}),
        "auth_time": iat, "user_id": uid, "sub": uid, "iat": iat, "exp": iat + lifetime_s,
        "aud": project, "iss": f"https://securetoken.google.com/{project}",
        "firebase": {"identities": {}, "sign_in_provider": "custom"},
    }
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."


def mint_tokens(host: str, project: str, n: int, *, prefix: str = "sim") -> list[tuple[str, str]]:
    """Create users ``{prefix}-00000``.. in the emulator and return [(uid, ID token)] for each."""
    uids = [f"{prefix}-{i:05d}" for i in range(n)]
    url = f"http://{host}/identitytoolkit.googleapis.com/v1/projects/{project}/accounts:batchCreate"
    with httpx.Client(timeout=60, headers={"Authorization": "Bearer owner"}) as client:
        for start in range(0, n, 1000):
            batch = [{"localId": u} for u in uids[start:start + 1000]]
            r = client.post(url, json={"users": batch})
            r.raise_for_status()
            if r.json().get("error"):
                raise RuntimeError(f"batchCreate refused some users: {r.json()['error'][:3]}")
    # Issued no earlier than the users' creation (the emulator records it as "valid since", and a
    # token issued before that counts as revoked).
    issued = math.ceil(time.time())
    return [(u, emulator_token(project, u, issued_at=issued)) for u in uids]
