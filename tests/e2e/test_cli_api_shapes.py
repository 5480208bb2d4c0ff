"""`boxoffice ... --json` and the HTTP API show a resource alike: the same fields, and for the same
event, order or hold the same values (both are the API's response models, api/schemas.py).

The API and the CLI share the session's Firestore; the CLI acts for a user with `--user UID`, so
replaying the API's idempotency key through the CLI returns the very order or hold the API made.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.e2e.test_cli import run
from tests.e2e.test_cli_ticket_types import BASE, EXAMPLES

# What `events show` adds for the operator beside the API's event (documented in cli/events.py).
SHOW_EXTRAS = {"summary", "shards"}


def cli(stack, *args: str) -> dict[str, Any]:
    done = run(stack, *args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout))


def fields(doc: Any, at: str = "") -> set[str]:
    """Every field path of a JSON document (`a.b`, `a[].c`): its shape without its values."""
    if isinstance(doc, dict):
        return {p for k, v in doc.items() for p in {f"{at}{k}"} | fields(v, f"{at}{k}.")}
    if isinstance(doc, list):
        return {p for v in doc for p in fields(v, f"{at[:-1]}[].")}
    return set()


def key() -> str:
    return uuid.uuid4().hex


def test_an_event_its_orders_holds_and_waitlist_read_the_same_from_the_cli_and_the_api(stack, http, user, event_of):
    org, buyer, other, late = user(organiser=True), user(), user(), user()
    ev = event_of(org, capacity=5, per_order_max=4, per_user_limit=4)
    event_id = ev["id"]
    assert http.get(f"/v1/events/{event_id}", headers=org.headers).json() == ev  # created as then shown

    # The event list: both from the display summary.
    assert cli(stack, "events", "list") == http.get("/v1/events").json()

    # An order: the API buys, the CLI replays the same key for the same user.
    k = key()
    r = http.post("/v1/purchases", json={"event_id": event_id, "quantity": 2}, headers=buyer.headers | {"Idempotency-Key": k})
    assert r.status_code == 201, r.text
    bought = cli(stack, "buy", event_id, "--user", buyer.uid, "--quantity", "2", "--key", k)
    assert bought["replayed"] and bought["order"] == r.json()

    # A hold: the API holds, the CLI replays it; the CLI confirms, the API's confirm replays that order.
    k = key()
    r = http.post("/v1/holds", json={"event_id": event_id, "quantity": 1}, headers=buyer.headers | {"Idempotency-Key": k})
    assert r.status_code == 201, r.text
    hold = r.json()
    assert cli(stack, "hold", event_id, "--user", buyer.uid, "--quantity", "1", "--key", k)["hold"] == hold
    confirmed = cli(stack, "confirm", hold["id"], "--user", buyer.uid)["order"]
    r = http.post(f"/v1/holds/{hold['id']}/confirm", headers=buyer.headers)
    assert r.status_code == 201 and r.headers["Idempotent-Replayed"] == "true", r.text
    assert confirmed == r.json()

    # A released hold: the CLI releases, the API's release (no change) answers the same hold.
    r = http.post("/v1/holds", json={"event_id": event_id, "quantity": 1}, headers=buyer.headers | {"Idempotency-Key": key()})
    assert r.status_code == 201, r.text
    released = cli(stack, "unhold", r.json()["id"], "--user", buyer.uid)["hold"]
    assert released["status"] == "released"
    assert http.post(f"/v1/holds/{released['id']}/release", headers=buyer.headers).json() == released

    # A cancelled ticket: the CLI cancels, the API's cancel (tickets already cancelled are skipped) answers alike.
    order = bought["order"]
    cancelled = cli(stack, "cancel", order["id"], "--user", buyer.uid, "--ticket", order["ticket_ids"][0])["order"]
    assert cancelled["cancelled_quantity"] == 1
    r = http.post(f"/v1/orders/{order['id']}/cancel", json={"ticket_ids": order["ticket_ids"][:1]}, headers=buyer.headers)
    assert r.status_code == 200 and r.json() == cancelled, r.text

    # Sold out, then the waitlist: joining again keeps one's place, so both answer the same entry.
    r = http.post("/v1/purchases", json={"event_id": event_id, "quantity": 3}, headers=other.headers | {"Idempotency-Key": key()})
    assert r.status_code == 201, r.text
    joined = cli(stack, "waitlist", "join", event_id, "--user", late.uid)
    assert joined.pop("ok") and joined["position"] == 1
    assert http.put(f"/v1/events/{event_id}/waitlist", headers=late.headers).json() == joined
    left = cli(stack, "waitlist", "leave", event_id, "--user", late.uid)
    assert left.pop("ok") and left["was_waiting"]
    assert fields(http.delete(f"/v1/events/{event_id}/waitlist", headers=late.headers).json()) == fields(left)

    # The event as its organiser sees it (counted from the shards) after all that, and after a pause.
    shown = cli(stack, "events", "show", event_id)
    api_event = http.get(f"/v1/events/{event_id}", headers=org.headers).json()
    assert api_event["availability"]["sold"] == 5 and api_event["availability"]["live"]
    assert set(shown) - set(api_event) == SHOW_EXTRAS
    assert {k: v for k, v in shown.items() if k not in SHOW_EXTRAS} == api_event
    paused = cli(stack, "sale", event_id, "pause")["event"]
    r = http.put(f"/v1/events/{event_id}/sale-status", json={"status": "paused"}, headers=org.headers)
    assert r.status_code == 200 and r.json() == paused and paused["status"] == "paused", r.text


def test_an_event_with_ticket_types_and_seats_and_its_order_lines_read_the_same(stack, http, user):
    org, buyer = user(organiser=True), user()
    # The same event created twice, by the CLI (`events create --types --seats`) and by the API.
    created = cli(stack, *BASE, "--types", str(EXAMPLES / "theatre-types.json"),
                  "--seats", str(EXAMPLES / "theatre-seats.json"))
    body = {"name": "Play", "venue": "Theatre", "starts_at": "2030-05-01T19:30:00+01:00", "per_order_max": 6,
            "types": json.loads((EXAMPLES / "theatre-types.json").read_text()),
            "seats": json.loads((EXAMPLES / "theatre-seats.json").read_text())}
    r = http.post("/v1/events", json=body, headers=org.headers)
    assert r.status_code == 201, r.text
    api_created = r.json()
    assert fields(created) == fields(api_created) and created["availability"]["types"]["circle"]["available"] == 30
    assert created | {"id": None, "organiser_id": None} == api_created | {"id": None, "organiser_id": None}
    assert http.get(f"/v1/events/{api_created['id']}", headers=org.headers).json() == api_created

    event_id, k = api_created["id"], key()
    r = http.post("/v1/purchases", json={"event_id": event_id, "types": {"stalls": 2, "standing": 1}},
                  headers=buyer.headers | {"Idempotency-Key": k})
    assert r.status_code == 201, r.text
    bought = cli(stack, "buy", event_id, "--user", buyer.uid, "--type", "stalls=2", "--type", "standing=1", "--key", k)
    assert bought["order"] == r.json() and len(bought["order"]["lines"]) == 2

    shown = cli(stack, "events", "show", event_id)
    api_event = http.get(f"/v1/events/{event_id}", headers=org.headers).json()
    assert {k: v for k, v in shown.items() if k not in SHOW_EXTRAS} == api_event
    assert api_event["availability"]["types"]["stalls"]["sold"] == 2
