"""Events with ticket types and a seat map, through the HTTP API: created whole or refused whole."""

from __future__ import annotations

import copy
import time
import uuid

import pytest

from tests.e2e.conftest import EVENT

TYPED = {k: v for k, v in EVENT.items() if k not in ("price", "capacity")} | {
    "per_order_max": 6, "per_user_limit": 6,
    "types": {
        "types": [
            {"id": "stalls", "name": "Stalls", "price": 4500},
            {"id": "balcony", "name": "Balcony", "price": 2500, "per_order_max": 4},
            {"id": "early", "name": "Early bird standing", "price": 1500, "pool": "floor", "capacity": 10,
             "opens_at": "2030-01-01T10:00:00+00:00", "closes_at": "2030-04-01T10:00:00+00:00"},
            {"id": "standing", "name": "Standing", "price": 2000, "pool": "floor"},
        ],
        "pools": [{"id": "floor", "capacity": 30}],
    },
    "seats": {
        "sections": [
            {"id": "stalls", "name": "Stalls", "rows": [
                {"id": "A", "first": 1, "last": 10, "type": "stalls"},
                {"id": "B", "first": 1, "last": 11, "type": "stalls", "missing": [6]}]},
            {"id": "balcony", "rows": [{"id": "A", "last": 8, "type": "balcony", "types": {"stalls": [1, 8]}}]},
        ],
        "blocked": ["stalls:A:1"],
    },
}


def test_an_event_with_types_pools_and_a_seat_map_is_created_with_a_counter_per_quota(http, user, db):
    org = user(organiser=True)
    r = http.post("/v1/events", json=TYPED, headers=org.headers)
    assert r.status_code == 201, r.text
    ev = r.json()
    # Seats: stalls 10 + 10 (an aisle) + 2 in the balcony - 1 blocked = 21; balcony 6; floor 30.
    assert ev["capacity"] == 21 + 6 + 30 and ev["price"] == 1500 and ev["seated"]
    types = {t["id"]: t for t in ev["ticket_types"]}
    assert (types["stalls"]["seated"], types["standing"]["seated"]) == (True, False)
    assert (types["early"]["pool"], types["early"]["cap"], types["standing"]["cap"]) == ("floor", 10, 30)
    shards = list(db.collection("events").document(ev["id"]).collection("inventory").stream())
    by_quota: dict[str, int] = {}
    for s in shards:
        doc = s.to_dict()
        by_quota[doc["pool"]] = by_quota.get(doc["pool"], 0) + doc["capacity"]
    assert by_quota == {"stalls": 21, "balcony": 6, "floor": 30, "cap:early": 10, "cap:standing": 30}
    # live counts (per type) are the organiser's; anyone else gets the lagging summary
    shown = http.get(f"/v1/events/{ev['id']}", headers=org.headers).json()
    assert shown["availability"]["available"] == 57  # the pools, not the counters inside them
    assert shown["availability"]["types"]["early"] == {"available": 10, "held": 0, "sold": 0, "capacity": 10}
    assert shown["availability"]["types"]["stalls"]["available"] == 21


def broken(change) -> dict:
    body = copy.deepcopy(TYPED)
    change(body)
    return body


@pytest.mark.parametrize(
    "change,code,fragment",
    [
        (lambda b: b["seats"]["sections"][0]["rows"][0].update(type="boxes"), "unknown_ticket_type", "boxes"),
        (lambda b: b["types"]["types"][3].update(pool="lawn"), "unknown_ticket_type", "lawn"),
        (lambda b: b["seats"]["blocked"].append("stalls:B:6"), "seat_not_in_map", "stalls:B:6"),
        (lambda b: b["seats"]["sections"][1]["rows"][0]["types"].update(stalls=[9]), "seat_not_in_map",
         "balcony:A:9"),
        (lambda b: b["types"]["pools"].append({"id": "stalls", "capacity": 5}), "overcommitted_pool",
         "shared pool has that id"),
        (lambda b: b["types"]["types"][2].update(capacity=31), "overcommitted_pool", "capped at 31"),
        (lambda b: b["types"]["types"][0].update(capacity=30), "overcommitted_pool", "21 seats"),
        (lambda b: b["types"]["types"][2].update(closes_at="2029-01-01T00:00:00+00:00"), "invalid_sale_window",
         "closes"),
        (lambda b: b["types"]["types"][2].update(opens_at="2020-01-01T00:00:00+00:00",
                                                 closes_at="2020-02-01T00:00:00+00:00"),
         "invalid_sale_window", "would close before the event is created"),
        (lambda b: b.update(price=100, types=None), "invalid_request", "needs ticket types"),
        (lambda b: b.update(capacity=10), "invalid_request", "disagrees"),
    ],
)
def test_contradicting_types_or_seats_are_422_and_nothing_is_written(http, user, db, change, code, fragment):
    org = user(organiser=True)
    r = http.post("/v1/events", json=broken(change), headers=org.headers)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code and fragment in r.json()["detail"]
    assert list(db.collection("events").limit(1).stream()) == []


def test_a_single_type_event_still_answers_with_its_one_default_type(http, user, event_of):
    ev = event_of(user(organiser=True))
    assert [(t["id"], t["price"], t["pool"]) for t in ev["ticket_types"]] == [("general", 2500, "default")]
    assert not ev["seated"] and ev["availability"]["types"] is None


def test_buying_by_type_and_by_seat_returns_priced_lines_and_seated_tickets(http, user, db):
    org, ann, bob = user(organiser=True), user(), user()
    ev = http.post("/v1/events", json=TYPED, headers=org.headers).json()

    def buy(who, **body):
        return http.post("/v1/purchases", json={"event_id": ev["id"], **body},
                         headers=who.headers | {"Idempotency-Key": uuid.uuid4().hex})

    r = buy(ann, types={"stalls": 2, "standing": 1})
    assert r.status_code == 201, r.text
    order = r.json()
    assert [(ln["type_id"], ln["quantity"], ln["amount"]) for ln in order["lines"]] == [
        ("stalls", 2, 9000), ("standing", 1, 2000)]
    assert order["amount"] == 11000 and order["quantity"] == 3
    # Row A has seat 1 blocked: 9 seats 2..10, middle 5.5 -> the pair 5-6.
    assert order["lines"][0]["seat_ids"] == ["stalls:A:5", "stalls:A:6"]
    detail = http.get(f"/v1/orders/{order['id']}", headers=ann.headers).json()
    assert [(t["type_id"], t["section"], t["row"], t["seat"]) for t in detail["tickets"]] == [
        ("stalls", "stalls", "A", 5), ("stalls", "stalls", "A", 6), ("standing", None, None, None)]

    r = buy(bob, seats=["stalls:A:6"])
    assert r.status_code == 409 and r.json()["code"] == "seat_unavailable", r.text
    r = buy(bob, seats=["stalls:A:1"])
    assert r.status_code == 409 and "blocked" in r.json()["detail"], r.text
    r = buy(bob, seats=["stalls:Z:1"])
    assert r.status_code == 422 and r.json()["code"] == "seat_not_in_map", r.text
    r = buy(bob, types={"boxes": 1})
    assert r.status_code == 422 and r.json()["code"] == "unknown_ticket_type", r.text
    r = buy(bob, seats=["balcony:A:1"])  # sold as stalls (the row's "types")
    assert r.status_code == 201 and r.json()["lines"][0]["type_id"] == "stalls", r.text


def test_holding_seats_and_cancelling_by_type_through_the_api(http, user, db, dump):
    org, ann, bob = user(organiser=True), user(), user()
    ev = http.post("/v1/events", json=TYPED, headers=org.headers).json()

    def post(path, who, body, key=True):
        headers = who.headers | ({"Idempotency-Key": uuid.uuid4().hex} if key else {})
        return http.post(path, json=body, headers=headers)

    r = post("/v1/holds", ann, {"event_id": ev["id"], "seats": ["stalls:A:5", "stalls:A:6"]})
    assert r.status_code == 201, r.text
    hold = r.json()
    assert [(ln["type_id"], ln["seat_ids"], ln["unit_price"]) for ln in hold["lines"]] == [
        ("stalls", ["stalls:A:5", "stalls:A:6"], 4500)]
    r = post("/v1/purchases", bob, {"event_id": ev["id"], "seats": ["stalls:A:6"]})
    assert r.status_code == 409 and r.json()["code"] == "seat_unavailable", r.text
    r = post(f"/v1/holds/{hold['id']}/confirm", ann, None, key=False)
    assert r.status_code in (200, 201), r.text
    order = r.json()
    assert order["lines"][0]["seat_ids"] == ["stalls:A:5", "stalls:A:6"] and order["amount"] == 9000

    sections = db.collection("events").document(ev["id"]).collection("sections")
    give_up = time.monotonic() + 15
    while time.monotonic() < give_up and {t for sec in sections.stream() for t in sec.to_dict()["taken"]} != {
            "stalls:A:5", "stalls:A:6"}:
        time.sleep(0.2)  # the allocator's section write lands before the dump, not during it
    before = dump()
    for body in ({"types": {"boxes": 1}}, {"types": {"stalls": 3}},
                 {"types": {"stalls": 1}, "ticket_ids": [order["ticket_ids"][0]]}, {"types": None}):
        r = post(f"/v1/orders/{order['id']}/cancel", ann, body, key=False)
        assert r.status_code == 422 and r.json()["code"] == "invalid_request", (body, r.text)
    assert dump() == before
    r = post(f"/v1/orders/{order['id']}/cancel", ann, {"types": {"stalls": 1}}, key=False)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "partially_cancelled" and r.json()["cancelled_quantity"] == 1
    # The seat given back sells again (the allocator frees it before its next decision).
    r = post("/v1/purchases", bob, {"event_id": ev["id"], "seats": ["stalls:A:6"]})
    assert r.status_code == 201, r.text


def test_an_organiser_releases_tickets_of_one_type_and_not_of_a_seated_one(http, user, db):
    org = user(organiser=True)
    ev = http.post("/v1/events", json=TYPED, headers=org.headers).json()
    r = http.post(f"/v1/events/{ev['id']}/releases", json={"quantity": 5, "type_id": "standing"}, headers=org.headers)
    assert r.status_code == 201, r.text
    assert r.json()["capacity"] == ev["capacity"] + 5
    for body in ({"quantity": 5, "type_id": "stalls"}, {"quantity": 5}, {"quantity": 5, "type_id": "boxes"}):
        r = http.post(f"/v1/events/{ev['id']}/releases", json=body, headers=org.headers)
        assert r.status_code == 422, (body, r.text)
