"""firestore.rules loaded into the Firestore emulator, exercised through its REST API as clients.

Clients authenticate with ID tokens (the emulators' unsigned format); the server SDK's
``Bearer owner`` bypasses rules and is used only to seed data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from boxoffice.runtime.emulator_users import emulator_token

RULES = Path(__file__).resolve().parents[2] / "firestore.rules"


@pytest.fixture
def rules(stack, db):
    r = httpx.put(f"http://{stack.firestore_host}/emulator/v1/projects/{stack.project}:securityRules",
                  json={"rules": {"files": [{"name": "firestore.rules", "content": RULES.read_text()}]}},
                  timeout=30)
    assert r.status_code == 200, r.text
    now = datetime.now(UTC)
    db.document("events/pub").set({"name": "Gig", "status": "on_sale",
                                   "summary": {"available": 5, "held": 0, "sold": 0, "capacity": 5}})
    db.document("events/draft").set({"name": "Secret", "status": "draft", "summary": {}, "organiser_id": "olga"})
    db.document("events/pub/inventory/s000").set({"capacity": 5, "available": 5, "held": 0, "sold": 0})
    db.document("events/pub/buyers/alice").set({"tickets": 1, "user_id": "alice"})
    db.document("orders/o_alice").set({"user_id": "alice", "event_id": "pub", "created_at": now})
    db.document("tickets/o_alice-t01").set({"user_id": "alice", "order_id": "o_alice", "code": "x"})
    db.document("holds/h_alice").set({"user_id": "alice", "event_id": "pub"})
    db.document("requests/o_alice").set({"user_id": "alice", "event_id": "pub", "outcome": "order"})
    db.document("outbox/m1").set({"topic": "orders", "published_at": None})
    db.document("analytics/daily").set({"sold": 1})
    db.document("users/alice").set({"email": "alice@example.com"})
    db.document("events/pub/waitlist/alice").set({"user_id": "alice", "status": "offered"})
    db.document("events/pub/sections/stalls").set({"taken": ["stalls:A:1"], "free": {"stalls": 9}, "blocked": []})
    db.document("events/draft/sections/stalls").set({"taken": [], "free": {"stalls": 10}, "blocked": []})
    db.document("events/pub/seats/stalls:A:1").set({"user_id": "alice", "order_id": "o_alice"})
    db.document("events/pub/seat_releases/r1").set({"seats": ["stalls:A:2"]})
    return Client(stack)


class Client:
    def __init__(self, stack) -> None:
        self.base = f"http://{stack.firestore_host}/v1/projects/{stack.project}/databases/(default)/documents"
        self.project = stack.project

    def _headers(self, uid: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {emulator_token(self.project, uid)}"} if uid else {}

    def get(self, path: str, uid: str | None = None) -> int:
        return httpx.get(f"{self.base}/{path}", headers=self._headers(uid), timeout=30).status_code

    def write(self, path: str, uid: str | None = None) -> int:
        body = {"fields": {"available": {"integerValue": "999"}, "user_id": {"stringValue": uid or ""}}}
        return httpx.patch(f"{self.base}/{path}", json=body, headers=self._headers(uid), timeout=30).status_code

    def delete(self, path: str, uid: str | None = None) -> int:
        return httpx.delete(f"{self.base}/{path}", headers=self._headers(uid), timeout=30).status_code

    def query(self, collection: str, field: str, value: str, uid: str | None = None) -> int:
        q = {"structuredQuery": {"from": [{"collectionId": collection}], "where": {"fieldFilter": {
            "field": {"fieldPath": field}, "op": "EQUAL", "value": {"stringValue": value}}}}}
        r = httpx.post(f"{self.base}:runQuery", json=q, headers=self._headers(uid), timeout=30)
        return r.status_code


def test_anyone_reads_published_events_and_their_summary(rules):
    assert rules.get("events/pub") == 200
    assert rules.get("events/pub", "bob") == 200
    assert rules.query("events", "status", "on_sale") == 200


def test_only_its_organiser_reads_a_draft_and_nobody_lists_unfiltered(rules):
    assert rules.get("events/draft") == 403
    assert rules.get("events/draft", "alice") == 403
    assert rules.get("events/draft", "olga") == 200
    assert rules.query("events", "organiser_id", "olga", "olga") == 200
    assert rules.query("events", "organiser_id", "olga", "alice") == 403
    assert rules.query("events", "organiser_id", "olga") == 403
    assert rules.query("events", "name", "Gig") == 403


def test_a_user_reads_only_their_own_orders_tickets_and_holds(rules):
    for path in ("orders/o_alice", "tickets/o_alice-t01", "holds/h_alice", "users/alice",
                 "events/pub/buyers/alice", "events/pub/waitlist/alice"):
        assert rules.get(path, "alice") == 200, path
        assert rules.get(path, "bob") == 403, path
        assert rules.get(path) == 403, path
    assert rules.query("orders", "user_id", "alice", "alice") == 200
    assert rules.query("orders", "user_id", "alice", "bob") == 403
    assert rules.query("tickets", "user_id", "alice", "bob") == 403


def test_the_storefront_lists_published_events_with_an_in_filter(rules):
    """The page's query: status in [on_sale, paused, closed]; a list that could include drafts is refused."""
    def in_query(values: list[str]) -> int:
        q = {"structuredQuery": {"from": [{"collectionId": "events"}], "where": {"fieldFilter": {
            "field": {"fieldPath": "status"}, "op": "IN",
            "value": {"arrayValue": {"values": [{"stringValue": v} for v in values]}}}}}}
        return httpx.post(f"{rules.base}:runQuery", json=q, timeout=30).status_code

    assert in_query(["on_sale", "paused", "closed"]) == 200
    assert in_query(["on_sale", "draft"]) == 403


def test_a_user_gets_their_own_waitlist_place_but_nobody_lists_the_waitlist(rules):
    q = {"structuredQuery": {"from": [{"collectionId": "waitlist"}]}}
    headers = rules._headers("alice")
    listed = httpx.post(f"{rules.base}/events/pub:runQuery", json=q, headers=headers, timeout=30)
    assert listed.status_code == 403
    assert rules.get("events/pub/waitlist/alice", "alice") == 200


def test_clients_read_no_inventory_outbox_or_analytics(rules):
    for path in ("events/pub/inventory/s000", "outbox/m1", "analytics/daily"):
        assert rules.get(path, "alice") == 403, path
        assert rules.get(path) == 403, path


def test_no_client_writes_anything(rules):
    paths = ("events/pub", "events/new", "events/pub/inventory/s000", "events/pub/buyers/alice",
             "orders/o_alice", "orders/o_new", "tickets/o_alice-t01", "holds/h_new", "outbox/m2",
             "analytics/daily", "users/alice", "events/pub/waitlist/alice")
    for path in paths:
        assert rules.write(path, "alice") == 403, path
        assert rules.write(path) == 403, path
    assert rules.delete("orders/o_alice", "alice") == 403
    assert rules.delete("events/pub/inventory/s000", "alice") == 403


def test_a_buyer_reads_and_may_await_only_their_own_request_document(rules):
    assert rules.get("requests/o_alice", "alice") == 200
    assert rules.get("requests/o_alice", "mallory") == 403
    assert rules.get("requests/o_alice") == 403
    # not answered yet: a signed-in buyer may wait for it (a listener reads the missing document)
    assert rules.get("requests/o_not_yet", "alice") == 404
    assert rules.get("requests/o_not_yet") == 403
    assert rules.write("requests/o_alice", "alice") == 403
    assert rules.query("requests", "user_id", "alice", "alice") == 200
    assert rules.query("requests", "user_id", "alice", "mallory") == 403


def test_anyone_reads_the_sections_of_a_published_event_and_nobody_writes_them(rules):
    assert rules.get("events/pub/sections/stalls") == 200
    assert rules.get("events/pub/sections/stalls", "bob") == 200
    listed = httpx.post(f"{rules.base}/events/pub:runQuery",
                        json={"structuredQuery": {"from": [{"collectionId": "sections"}]}}, timeout=30)
    assert listed.status_code == 200 and "stalls:A:1" in listed.text
    assert rules.get("events/draft/sections/stalls") == 403
    assert rules.get("events/draft/sections/stalls", "alice") == 403
    assert rules.get("events/draft/sections/stalls", "olga") == 200
    for path in ("events/pub/sections/stalls", "events/pub/sections/new", "events/draft/sections/stalls"):
        assert rules.write(path, "alice") == 403, path
        assert rules.write(path, "olga") == 403, path
        assert rules.write(path) == 403, path
    assert rules.delete("events/pub/sections/stalls", "alice") == 403


def test_who_holds_a_seat_and_the_seat_release_markers_stay_server_only(rules):
    for path in ("events/pub/seats/stalls:A:1", "events/pub/seat_releases/r1"):
        assert rules.get(path, "alice") == 403, path
        assert rules.get(path) == 403, path
        assert rules.write(path, "alice") == 403, path
