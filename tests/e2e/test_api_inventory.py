"""Holds, cancellations, waitlists and an organiser's sale controls over HTTP, end to end:
uvicorn + Firestore emulator + Auth emulator, real ID tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.e2e.test_api import assert_problem, buy, key


def hold(http, who, event_id, quantity=1, k=None):
    return http.post("/v1/holds", json={"event_id": event_id, "quantity": quantity},
                     headers=who.headers | {"Idempotency-Key": k or key()})


def availability(http, event_id):
    return http.get(f"/v1/events/{event_id}").json()["availability"]


# --- holds ----------------------------------------------------------------------------------


def test_hold_then_confirm_becomes_an_order_once(http, user, event_of):
    ev = event_of(user(organiser=True))
    buyer = user()
    k = key()
    r = hold(http, buyer, ev["id"], 2, k)
    assert r.status_code == 201, r.text
    h = r.json()
    assert (h["user_id"], h["quantity"], h["status"], h["order_id"]) == (buyer.uid, 2, "active", None)
    assert r.headers["location"] == f"/v1/holds/{h['id']}" and "idempotent-replayed" not in r.headers
    assert datetime.fromisoformat(h["expires_at"]) > datetime.now(UTC) + timedelta(minutes=9)
    assert availability(http, ev["id"]) | {"live": True} == {
        "available": 18, "held": 2, "sold": 0, "capacity": 20, "live": True, "types": None}

    again = hold(http, buyer, ev["id"], 2, k)
    assert again.status_code == 201 and again.json() == h
    assert again.headers["idempotent-replayed"] == "true"
    assert_problem(hold(http, buyer, ev["id"], 3, k), 409, "idempotency_conflict")
    assert http.get(f"/v1/holds/{h['id']}", headers=buyer.headers).json() == h

    c = http.post(f"/v1/holds/{h['id']}/confirm", headers=buyer.headers)
    assert c.status_code == 201, c.text
    order = c.json()
    assert (order["user_id"], order["quantity"], order["amount"], order["status"]) == (buyer.uid, 2, 5000, "confirmed")
    assert c.headers["location"] == f"/v1/orders/{order['id']}"
    c2 = http.post(f"/v1/holds/{h['id']}/confirm", headers=buyer.headers)
    assert c2.status_code == 201 and c2.json() == order and c2.headers["idempotent-replayed"] == "true"

    assert availability(http, ev["id"])["sold"] == 2 and availability(http, ev["id"])["held"] == 0
    shown = http.get(f"/v1/holds/{h['id']}", headers=buyer.headers).json()
    assert (shown["status"], shown["order_id"]) == ("confirmed", order["id"])
    assert len(http.get(f"/v1/orders/{order['id']}", headers=buyer.headers).json()["tickets"]) == 2
    assert_problem(http.post(f"/v1/holds/{h['id']}/release", headers=buyer.headers), 409, "hold_not_active")


def test_hold_without_idempotency_key_is_428(http, user, event_of):
    ev = event_of(user(organiser=True))
    r = http.post("/v1/holds", json={"event_id": ev["id"], "quantity": 1}, headers=user().headers)
    assert_problem(r, 428, "idempotency_key_required")


def test_hold_refusals_are_documented_problems(http, user, event_of):
    ev = event_of(user(organiser=True), capacity=5, per_order_max=4, per_user_limit=4)
    a, b = user(), user()
    assert_problem(hold(http, a, "ev_missing"), 404, "event_not_found")
    assert_problem(hold(http, a, ev["id"], 0), 422, "invalid_request")
    assert_problem(hold(http, a, ev["id"], 5), 422, "invalid_quantity")
    assert hold(http, a, ev["id"], 3).status_code == 201
    assert_problem(buy(http, a, ev["id"], 2), 409, "per_user_limit_exceeded")  # held tickets count
    assert_problem(hold(http, b, ev["id"], 3), 409, "not_enough_tickets")
    assert hold(http, b, ev["id"], 2).status_code == 201
    assert_problem(hold(http, b, ev["id"], 1), 409, "sold_out")
    draft = event_of(user(organiser=True), on_sale=False)
    assert_problem(hold(http, a, draft["id"]), 409, "event_not_on_sale")


def test_released_hold_gives_its_tickets_back(http, user, event_of):
    ev = event_of(user(organiser=True))
    buyer = user()
    h = hold(http, buyer, ev["id"], 3).json()
    r = http.post(f"/v1/holds/{h['id']}/release", headers=buyer.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "released"
    assert availability(http, ev["id"])["available"] == 20
    again = http.post(f"/v1/holds/{h['id']}/release", headers=buyer.headers)
    assert again.status_code == 200 and again.json()["status"] == "released"
    assert_problem(http.post(f"/v1/holds/{h['id']}/confirm", headers=buyer.headers), 409, "hold_not_active")


def test_an_expired_hold_cannot_be_confirmed(http, user, event_of, db):
    ev = event_of(user(organiser=True))
    buyer = user()
    h = hold(http, buyer, ev["id"], 1).json()
    # The API cannot make a hold shorter than a minute: move its expiry into the past instead.
    db.collection("holds").document(h["id"]).update({"expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    assert_problem(http.post(f"/v1/holds/{h['id']}/confirm", headers=buyer.headers), 409, "hold_expired")
    assert availability(http, ev["id"])["sold"] == 0


def test_a_user_cannot_see_confirm_or_release_another_users_hold(http, user, event_of):
    ev = event_of(user(organiser=True))
    alice, bob = user(), user()
    h = hold(http, alice, ev["id"], 2).json()
    assert_problem(http.get(f"/v1/holds/{h['id']}", headers=bob.headers), 404, "hold_not_found")
    assert_problem(http.post(f"/v1/holds/{h['id']}/confirm", headers=bob.headers), 404, "hold_not_found")
    assert_problem(http.post(f"/v1/holds/{h['id']}/release", headers=bob.headers), 404, "hold_not_found")
    assert http.get(f"/v1/holds/{h['id']}", headers=alice.headers).json()["status"] == "active"
    assert availability(http, ev["id"])["held"] == 2
    assert_problem(http.get("/v1/holds/h_nope", headers=alice.headers), 404, "hold_not_found")


# --- cancellations --------------------------------------------------------------------------


def test_buyer_cancels_some_tickets_then_the_rest(http, user, event_of):
    ev = event_of(user(organiser=True))
    buyer = user()
    order = buy(http, buyer, ev["id"], 3).json()
    first = order["ticket_ids"][0]
    r = http.post(f"/v1/orders/{order['id']}/cancel", json={"ticket_ids": [first]}, headers=buyer.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["cancelled_quantity"]) == ("partially_cancelled", 1)
    assert availability(http, ev["id"])["sold"] == 2
    tickets = {t["id"]: t["status"] for t in http.get(f"/v1/orders/{order['id']}", headers=buyer.headers).json()["tickets"]}
    assert tickets[first] == "void" and sorted(tickets.values()) == ["valid", "valid", "void"]

    assert_problem(http.post(f"/v1/orders/{order['id']}/cancel", json={"ticket_ids": ["t_not_mine"]},
                             headers=buyer.headers), 422, "invalid_request")
    r = http.post(f"/v1/orders/{order['id']}/cancel", headers=buyer.headers)
    assert r.status_code == 200 and (r.json()["status"], r.json()["cancelled_quantity"]) == ("cancelled", 3)
    again = http.post(f"/v1/orders/{order['id']}/cancel", headers=buyer.headers)
    assert again.status_code == 200 and again.json() == r.json()
    assert availability(http, ev["id"]) | {"live": True} == {
        "available": 20, "held": 0, "sold": 0, "capacity": 20, "live": True, "types": None}
    assert_problem(http.post("/v1/orders/o_nope/cancel", headers=buyer.headers), 404, "order_not_found")


def test_one_user_cannot_cancel_another_users_order(http, user, event_of):
    ev = event_of(user(organiser=True))
    alice, bob, other_org = user(), user(), user(organiser=True)
    order = buy(http, alice, ev["id"], 2).json()
    for who in (bob, other_org):  # another organiser is not this event's organiser
        assert_problem(http.post(f"/v1/orders/{order['id']}/cancel", headers=who.headers), 404, "order_not_found")
    shown = http.get(f"/v1/orders/{order['id']}", headers=alice.headers).json()
    assert (shown["status"], shown["cancelled_quantity"]) == ("confirmed", 0)
    assert availability(http, ev["id"])["sold"] == 2


def test_the_events_organiser_cancels_any_order_of_it(http, user, event_of, db):
    org = user(organiser=True)
    ev = event_of(org)
    alice = user()
    order = buy(http, alice, ev["id"], 2).json()
    r = http.post(f"/v1/orders/{order['id']}/cancel", headers=org.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["user_id"] == alice.uid
    refunds = [s.to_dict() for s in db.collection("refunds").stream()]
    assert [(x["order_id"], x["by_organiser"], x["amount"]) for x in refunds] == [(order["id"], True, 5000)]
    assert availability(http, ev["id"])["available"] == 20


# --- waitlist -------------------------------------------------------------------------------


def test_waitlist_join_and_leave(http, user, event_of):
    ev = event_of(user(organiser=True), capacity=1, per_order_max=1, per_user_limit=1)
    ann, bob, cy = user(), user(), user()
    assert_problem(http.put(f"/v1/events/{ev['id']}/waitlist", headers=bob.headers), 409, "not_sold_out")
    assert buy(http, ann, ev["id"]).status_code == 201
    r = http.put(f"/v1/events/{ev['id']}/waitlist", headers=bob.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["user_id"], r.json()["status"], r.json()["position"]) == (bob.uid, "waiting", 1)
    assert http.put(f"/v1/events/{ev['id']}/waitlist", headers=cy.headers).json()["position"] == 2
    assert http.put(f"/v1/events/{ev['id']}/waitlist", headers=bob.headers).json()["position"] == 1
    left = http.delete(f"/v1/events/{ev['id']}/waitlist", headers=bob.headers)
    assert left.status_code == 200 and left.json() == {"event_id": ev["id"], "user_id": bob.uid, "was_waiting": True}
    assert http.delete(f"/v1/events/{ev['id']}/waitlist", headers=bob.headers).json()["was_waiting"] is False
    assert http.put(f"/v1/events/{ev['id']}/waitlist", headers=cy.headers).json()["position"] == 1
    assert_problem(http.put("/v1/events/ev_nope/waitlist", headers=bob.headers), 404, "event_not_found")
    assert_problem(http.delete("/v1/events/ev_nope/waitlist", headers=bob.headers), 404, "event_not_found")
    assert_problem(http.put(f"/v1/events/{ev['id']}/waitlist"), 401, "unauthenticated")


# --- organiser: releases and sale status ----------------------------------------------------


def test_organiser_releases_tickets_for_a_sold_out_event(http, user, event_of):
    org = user(organiser=True)
    ev = event_of(org, capacity=2)
    assert buy(http, user(), ev["id"], 2).status_code == 201
    assert_problem(buy(http, user(), ev["id"]), 409, "sold_out")
    r = http.post(f"/v1/events/{ev['id']}/releases", json={"quantity": 5}, headers=org.headers)
    assert r.status_code == 201, r.text
    assert r.json()["capacity"] == 7
    assert r.json()["availability"] == {"available": 5, "held": 0, "sold": 2, "capacity": 7, "live": True, "types": None}
    assert buy(http, user(), ev["id"], 4).status_code == 201
    assert_problem(http.post(f"/v1/events/{ev['id']}/releases", json={"quantity": 0}, headers=org.headers),
                   422, "invalid_request")
    assert_problem(http.post("/v1/events/ev_nope/releases", json={"quantity": 1}, headers=org.headers),
                   404, "event_not_found")


def test_a_non_organiser_cannot_release_or_pause(http, user, event_of):
    owner = user(organiser=True)
    ev = event_of(owner)
    buyer, other_org = user(), user(organiser=True)
    release, status = f"/v1/events/{ev['id']}/releases", f"/v1/events/{ev['id']}/sale-status"
    assert_problem(http.post(release, json={"quantity": 5}, headers=buyer.headers), 403, "not_an_organiser")
    assert_problem(http.put(status, json={"status": "paused"}, headers=buyer.headers), 403, "not_an_organiser")
    assert_problem(http.post(release, json={"quantity": 5}, headers=other_org.headers), 403, "not_event_organiser")
    assert_problem(http.put(status, json={"status": "paused"}, headers=other_org.headers), 403, "not_event_organiser")
    assert_problem(http.put(status, json={"status": "closed"}, headers=other_org.headers), 403, "not_event_organiser")
    shown = http.get(f"/v1/events/{ev['id']}").json()
    assert (shown["capacity"], shown["status"], shown["availability"]["capacity"]) == (20, "on_sale", 20)


def test_pause_resume_and_close_a_sale(http, user, event_of):
    org = user(organiser=True)
    ev = event_of(org)
    status = f"/v1/events/{ev['id']}/sale-status"
    buyer = user()
    h = hold(http, buyer, ev["id"], 1).json()
    r = http.put(status, json={"status": "paused"}, headers=org.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "paused"
    assert_problem(buy(http, buyer, ev["id"]), 409, "event_not_on_sale")
    assert_problem(hold(http, buyer, ev["id"]), 409, "event_not_on_sale")
    assert http.post(f"/v1/holds/{h['id']}/confirm", headers=buyer.headers).status_code == 201  # held before
    assert http.put(status, json={"status": "paused"}, headers=org.headers).json()["status"] == "paused"
    assert http.put(status, json={"status": "on_sale"}, headers=org.headers).json()["status"] == "on_sale"
    assert buy(http, buyer, ev["id"]).status_code == 201
    assert http.put(status, json={"status": "closed"}, headers=org.headers).json()["status"] == "closed"
    assert_problem(http.put(status, json={"status": "on_sale"}, headers=org.headers), 409, "invalid_sale_transition")
    assert_problem(http.post(f"/v1/events/{ev['id']}/releases", json={"quantity": 1}, headers=org.headers),
                   409, "event_not_on_sale")
    assert_problem(http.put(status, json={"status": "sold"}, headers=org.headers), 422, "invalid_request")


def test_a_draft_goes_on_sale_through_the_sale_status(http, user, event_of):
    org = user(organiser=True)
    ev = event_of(org, on_sale=False)
    assert_problem(buy(http, user(), ev["id"]), 409, "event_not_on_sale")
    r = http.put(f"/v1/events/{ev['id']}/sale-status", json={"status": "on_sale"}, headers=org.headers)
    assert r.status_code == 200 and r.json()["status"] == "on_sale"
    assert buy(http, user(), ev["id"]).status_code == 201


def test_a_buyers_address_is_on_file_for_the_emails_their_actions_cause(http, user, event_of, db):
    ev = event_of(user(organiser=True))
    ann, bob = user(), user()
    assert buy(http, ann, ev["id"]).status_code == 201
    assert hold(http, bob, ev["id"]).status_code == 201
    for who in (ann, bob):
        assert db.collection("users").document(who.uid).get().to_dict()["email"] == who.email


def test_new_operations_are_in_the_openapi_document(http):
    paths = http.get("/openapi.json").json()["paths"]
    for path, method in [("/v1/holds", "post"), ("/v1/holds/{hold_id}", "get"),
                         ("/v1/holds/{hold_id}/confirm", "post"), ("/v1/holds/{hold_id}/release", "post"),
                         ("/v1/orders/{order_id}/cancel", "post"), ("/v1/events/{event_id}/waitlist", "put"),
                         ("/v1/events/{event_id}/waitlist", "delete"), ("/v1/events/{event_id}/releases", "post"),
                         ("/v1/events/{event_id}/sale-status", "put")]:
        assert method in paths[path], (path, method)
        assert "application/problem+json" in paths[path][method]["responses"]["404"]["content"]
