"""The HTTP API end to end: uvicorn + Firestore emulator + Auth emulator, real ID tokens."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.conftest import EVENT

PROBLEM = "application/problem+json"


def key() -> str:
    return uuid.uuid4().hex


def buy(http, who, event_id, quantity=1, k=None):
    return http.post("/v1/purchases", json={"event_id": event_id, "quantity": quantity},
                     headers=who.headers | {"Idempotency-Key": k or key()})


def assert_problem(r, status, code):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["code"] == code and body["status"] == status and body["detail"]


# --- events -----------------------------------------------------------------------------


def test_organiser_creates_event_and_owns_it(http, user, event_of):
    org = user(organiser=True)
    ev = event_of(org)
    assert ev["organiser_id"] == org.uid
    assert ev["availability"] == {"available": 20, "held": 0, "sold": 0, "capacity": 20, "live": True,
                                  "types": None}
    shown = http.get(f"/v1/events/{ev['id']}").json()
    assert shown["name"] == EVENT["name"] and shown["organiser_id"] == org.uid


def test_a_buyer_cannot_create_an_event(http, user):
    r = http.post("/v1/events", json=EVENT, headers=user().headers)
    assert_problem(r, 403, "not_an_organiser")


def test_invalid_event_is_422_with_a_readable_message(http, user):
    org = user(organiser=True)
    r = http.post("/v1/events", json=EVENT | {"per_user_limit": 2}, headers=org.headers)
    assert_problem(r, 422, "invalid_request")
    assert "per_user_limit" in r.json()["detail"]
    r = http.post("/v1/events", json=EVENT | {"starts_at": "2030-05-01T20:00:00"}, headers=org.headers)
    assert_problem(r, 422, "invalid_request")


def test_only_the_events_organiser_updates_it(http, user, event_of):
    owner, other = user(organiser=True), user(organiser=True)
    ev = event_of(owner)
    r = http.patch(f"/v1/events/{ev['id']}", json={"name": "Renamed"}, headers=other.headers)
    assert_problem(r, 403, "not_event_organiser")
    r = http.patch(f"/v1/events/{ev['id']}", json={"name": "Renamed", "price": 3000}, headers=owner.headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Renamed" and r.json()["price"] == 3000
    assert http.get(f"/v1/events/{ev['id']}").json()["name"] == "Renamed"
    r = http.patch(f"/v1/events/{ev['id']}", json={"capacity": 5}, headers=owner.headers)
    assert_problem(r, 422, "invalid_request")


def test_unknown_event_is_404(http):
    assert_problem(http.get("/v1/events/ev_nope"), 404, "event_not_found")


def test_events_list_pages_with_a_cursor(http, user, event_of):
    org = user(organiser=True)
    ids = [event_of(org, starts_at=f"2030-05-0{d}T20:00:00+00:00")["id"] for d in (1, 2, 3)]
    first = http.get("/v1/events", params={"limit": 2}).json()
    assert [e["id"] for e in first["events"]] == ids[:2] and first["next"] == ids[1]
    second = http.get("/v1/events", params={"limit": 2, "after": first["next"]}).json()
    assert [e["id"] for e in second["events"]] == ids[2:] and second["next"] is None
    assert_problem(http.get("/v1/events", params={"limit": 1000}), 422, "invalid_request")


# --- purchase and orders ------------------------------------------------------------------


def test_purchase_then_show_and_list_my_orders(http, user, event_of):
    ev = event_of(user(organiser=True))
    buyer = user()
    r = buy(http, buyer, ev["id"], 2)
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["user_id"] == buyer.uid and order["quantity"] == 2 and order["amount"] == 5000
    assert r.headers["location"] == f"/v1/orders/{order['id']}"
    shown = http.get(f"/v1/orders/{order['id']}", headers=buyer.headers).json()
    assert len(shown["tickets"]) == 2 and all(t["code"] for t in shown["tickets"])
    mine = http.get("/v1/orders", headers=buyer.headers).json()
    assert [o["id"] for o in mine["orders"]] == [order["id"]]
    live = http.get(f"/v1/events/{ev['id']}", headers=ev.owner.headers).json()["availability"]
    assert live["sold"] == 2 and live["available"] == 18 and live["live"] is True


def test_replayed_key_returns_the_first_response(http, user, event_of):
    ev = event_of(user(organiser=True))
    buyer = user()
    k = key()
    first = buy(http, buyer, ev["id"], 2, k)
    again = buy(http, buyer, ev["id"], 2, k)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert_problem(buy(http, buyer, ev["id"], 3, k), 409, "idempotency_conflict")


def test_purchase_without_idempotency_key_is_428(http, user, event_of):
    ev = event_of(user(organiser=True))
    r = http.post("/v1/purchases", json={"event_id": ev["id"], "quantity": 1}, headers=user().headers)
    assert_problem(r, 428, "idempotency_key_required")


def test_purchase_refusals_are_documented_problems(http, user, event_of):
    ev = event_of(user(organiser=True), capacity=5, per_order_max=4, per_user_limit=4)
    a, b = user(), user()
    assert_problem(buy(http, a, "ev_missing"), 404, "event_not_found")
    assert_problem(buy(http, a, ev["id"], 0), 422, "invalid_request")
    assert_problem(buy(http, a, ev["id"], 5), 422, "invalid_quantity")
    assert buy(http, a, ev["id"], 4).status_code == 201
    assert_problem(buy(http, a, ev["id"], 1), 409, "per_user_limit_exceeded")
    assert_problem(buy(http, b, ev["id"], 2), 409, "not_enough_tickets")
    assert buy(http, b, ev["id"], 1).status_code == 201
    assert_problem(buy(http, b, ev["id"], 1), 409, "sold_out")


def test_draft_event_is_not_found_by_buyers(http, user, event_of):
    ev = event_of(user(organiser=True), on_sale=False)
    assert_problem(buy(http, user(), ev["id"]), 404, "event_not_found")


def test_a_user_cannot_read_another_users_order(http, user, event_of):
    ev = event_of(user(organiser=True))
    alice, bob = user(), user()
    order = buy(http, alice, ev["id"]).json()
    assert_problem(http.get(f"/v1/orders/{order['id']}", headers=bob.headers), 404, "order_not_found")
    assert http.get("/v1/orders", headers=bob.headers).json()["orders"] == []
    # bob cannot page from alice's order either
    assert_problem(http.get("/v1/orders", params={"after": order["id"]}, headers=bob.headers),
                   404, "order_not_found")


def test_no_endpoint_trusts_a_user_id_in_the_body(http, user, event_of):
    ev = event_of(user(organiser=True))
    alice, bob = user(), user()
    r = http.post("/v1/purchases", json={"event_id": ev["id"], "quantity": 1, "user_id": bob.uid},
                  headers=alice.headers | {"Idempotency-Key": key()})
    assert_problem(r, 422, "invalid_request")
    r = http.post("/v1/events", json=EVENT | {"organiser_id": bob.uid}, headers=user(organiser=True).headers)
    assert_problem(r, 422, "invalid_request")


def test_same_key_under_20_concurrent_requests_yields_one_order(http, user, event_of, api, db):
    ev = event_of(user(organiser=True))
    buyer = user()
    k = key()

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=api, timeout=30) as c:
            return buy(c, buyer, ev["id"], 2, k)

    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(one, range(20)))
    assert {r.status_code for r in replies} == {201}, [r.text for r in replies if r.status_code != 201]
    assert len({r.json()["id"] for r in replies}) == 1
    assert sum(r.headers.get("idempotent-replayed") != "true" for r in replies) == 1
    orders = list(db.collection("orders").stream())
    assert len(orders) == 1
    assert http.get(f"/v1/events/{ev['id']}", headers=ev.owner.headers).json()["availability"]["sold"] == 2


# --- authentication -----------------------------------------------------------------------


def test_missing_token_is_401(http, event_of, user):
    ev = event_of(user(organiser=True))
    r = http.post("/v1/purchases", json={"event_id": ev["id"], "quantity": 1},
                  headers={"Idempotency-Key": key()})
    assert_problem(r, 401, "unauthenticated")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_problem(http.get("/v1/orders", headers={"Authorization": "Basic abc"}), 401, "unauthenticated")


def test_expired_token_is_401(http, user, stack):
    from boxoffice.runtime.emulator_users import emulator_token

    real = user()
    expired = emulator_token(stack.project, real.uid, issued_at=time.time() - 7200)
    r = http.get("/v1/orders", headers={"Authorization": f"Bearer {expired}"})
    assert_problem(r, 401, "unauthenticated")
    assert "expired" in r.json()["detail"]


def test_forged_tokens_are_401(http, user, stack):
    from boxoffice.runtime.emulator_users import emulator_token

    real = user()
    forged = {
        "garbage": "not-a-jwt",
        "unknown user": emulator_token(stack.project, "nobody-" + key()),
        "self-made organiser": emulator_token(stack.project, real.uid, claims={"organiser": True}),
        "other project": emulator_token("someone-elses-project", real.uid),
    }
    for what, token in forged.items():
        r = http.get("/v1/orders", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, (what, r.text)
        assert r.json()["code"] == "unauthenticated"
    assert http.get("/v1/orders", headers=real.headers).status_code == 200


# --- limits and shapes --------------------------------------------------------------------


def test_oversized_body_is_413(http, user):
    org = user(organiser=True)
    r = http.post("/v1/events", content=b'{"name": "' + b"x" * 20_000 + b'"}',
                  headers=org.headers | {"content-type": "application/json"})
    assert_problem(r, 413, "request_too_large")


def test_unknown_route_is_a_problem_document(http):
    assert_problem(http.get("/v1/nothing"), 404, "http_404")


def test_openapi_document_is_served(http):
    doc = http.get("/openapi.json").json()
    assert "/v1/purchases" in doc["paths"] and "Problem" in doc["components"]["schemas"]


def test_minted_users_buy_through_the_simulator_client(api, http, user, event_of, auth_emulator, stack):
    from boxoffice.loadtest.api_client import purchase_via_api
    from boxoffice.runtime.emulator_users import mint_tokens

    ev = event_of(user(organiser=True), capacity=3)
    buyers = mint_tokens(auth_emulator.host, stack.project, 5, prefix=f"sim{uuid.uuid4().hex[:6]}")
    replies = [purchase_via_api(api, token, ev["id"], 1, f"k-{uid}") for uid, token in buyers]
    assert [r.code for r in replies] == ["ok", "ok", "ok", "sold_out", "sold_out"]
    again = purchase_via_api(api, buyers[0][1], ev["id"], 1, f"k-{buyers[0][0]}")
    assert again.ok and again.replayed and again.body == replies[0].body
