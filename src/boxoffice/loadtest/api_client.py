"""A small HTTP client of the API, for the flash-sale simulator (`simulate --via-api`) and scripts.

One ``httpx.Client`` per thread and base URL keeps connections alive across calls, so the
simulator measures the API, not TCP handshakes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

_local = threading.local()


@dataclass(frozen=True)
class ApiReply:
    status: int
    body: dict[str, Any]
    replayed: bool

    @property
    def ok(self) -> bool:
        return self.status in (200, 201)

    @property
    def code(self) -> str:
        """'ok', or the problem code (sold_out, not_enough_tickets, per_user_limit_exceeded...)."""
        return "ok" if self.ok else str(self.body.get("code", f"http_{self.status}"))


def _client(base_url: str) -> httpx.Client:
    clients: dict[str, httpx.Client] = getattr(_local, "clients", None) or {}
    _local.clients = clients
    if base_url not in clients:
        clients[base_url] = httpx.Client(base_url=base_url, timeout=30.0)
    return clients[base_url]


def purchase_via_api(base_url: str, token: str, event_id: str, quantity: int, key: str,
                     *, http: httpx.Client | None = None) -> ApiReply:
    """POST /v1/purchases as the user of ``token``; never raises for a 4xx/5xx (see ``ApiReply``).

    ``http``: a client whose base URL is ``base_url`` (e.g. one of a pool made before a load run,
    so that no timed request pays for building one); default: this thread's keep-alive client.
    """
    client = http or _client(base_url)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    r = client.post("/v1/purchases", json={"event_id": event_id, "quantity": quantity}, headers=headers)
    try:
        body = r.json()
    except ValueError:
        body = {"code": f"http_{r.status_code}", "detail": r.text[:200]}
    if r.status_code == 202:
        return _poll(client, r.headers["Location"], headers, body)
    return ApiReply(r.status_code, body, r.headers.get("Idempotent-Replayed") == "true")


POLL_S = 0.25
POLL_FOR_S = 60.0


def _poll(client: httpx.Client, location: str, headers: dict[str, str], body: dict[str, Any]) -> ApiReply:
    """A 202 (queued): GET its Location until the answer is there, as a client would."""
    give_up = time.monotonic() + POLL_FOR_S
    while body.get("status") == "pending" and time.monotonic() < give_up:
        time.sleep(POLL_S)
        r = client.get(location, headers={"Authorization": headers["Authorization"]})
        body = r.json()
        if r.status_code != 200:
            return ApiReply(r.status_code, body, False)
    if body.get("order"):
        return ApiReply(200, body["order"], False)
    if body.get("error"):
        return ApiReply(409, {"code": body["error"]["code"], "detail": body["error"]["message"]}, False)
    return ApiReply(202, {"code": "answer_pending", "detail": f"no answer after polling {location}"}, False)
