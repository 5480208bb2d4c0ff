"""A purchase the API answers 202: its place in the queue, the poll, the retry, the order.

The allocator runs in its own OS process (stopped, then started slow: one request a commit) and
the requests ahead are published by another process; the API is the session's uvicorn.
"""

from __future__ import annotations

import time
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.store.leases import LEASES


def answered_count(db, event_id: str) -> int:
    query = db.collection("requests").where(filter=FieldFilter("event_id", "==", event_id))
    return int(query.count().get()[0][0].value)


def poll_until_answered(http, db, event_id: str, location: str, headers: dict, ahead_of_it: int,
                        timeout_s: float = 120) -> tuple[dict, list[dict]]:
    """Polls ``location`` until the request is answered; returns the answer and every place seen,
    each with ``true_ahead``: of the ``ahead_of_it`` requests queued before it, those without an
    answer document right after the poll (the estimate's error, for the record)."""
    places = []
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        r = http.get(location, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] != "pending":
            return body, places
        places.append(body["queue"] | {"true_ahead": max(0, ahead_of_it - answered_count(db, event_id))})
        time.sleep(0.2)
    raise AssertionError(f"not answered after {timeout_s}s; places seen: {places[-3:]}")


def test_a_queued_purchase_says_where_it_stands_and_its_retry_is_one_order(http, user, event_of, held_queue, db):
    organiser, buyer = user(organiser=True), user()
    event = event_of(organiser, capacity=500, per_order_max=4, per_user_limit=4)
    held_queue.backlog(event["id"], 200)  # other buyers, another process: ahead of ours

    headers = buyer.headers | {"Idempotency-Key": "queued-1"}
    first = http.post("/v1/purchases", json={"event_id": event["id"], "quantity": 2}, headers=headers)
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["status"] == "pending" and body["order"] is None
    # No allocator holds the queue: the place is kept, and no number is made up.
    assert body["queue"]["state"] == "waiting_for_allocator"
    assert body["queue"]["ahead"] is None and body["queue"]["eta_s"] is None
    location = first.headers["location"]
    query = parse_qs(urlsplit(location).query)
    assert urlsplit(location).path == f"/v1/purchases/{body['id']}"
    assert query["event_id"] == [event["id"]]
    queued_at = datetime.fromisoformat(query["queued_at"][0])
    assert abs((queued_at - datetime.fromisoformat(body["queue"]["queued_at"])).total_seconds()) < 0.001

    # A retry with the same key (the page after a network error) is the same request.
    again = http.post("/v1/purchases", json={"event_id": event["id"], "quantity": 2}, headers=headers)
    assert again.status_code == 202 and again.json()["id"] == body["id"]
    polled = http.get(location, headers=buyer.headers).json()
    assert polled["status"] == "pending" and polled["queue"]["state"] == "waiting_for_allocator"

    held_queue.start_slow_allocator()
    answer, places = poll_until_answered(http, db, event["id"], location, buyer.headers, ahead_of_it=200)
    print("estimated / true requests ahead, poll by poll:",
          [(p["ahead"], p["true_ahead"]) for p in places if p["state"] != "waiting_for_allocator"])
    assert answer["status"] == "order" and answer["order"]["quantity"] == 2
    counted = [p for p in places if p["state"] == "queued" and p["ahead"]]
    assert counted, f"no place was reported while the allocator worked through the backlog: {places}"
    assert all(p["eta_s"] is not None and p["eta_s"] >= 0 for p in counted)
    assert all(p["answering_arrivals_of"] is not None for p in counted)

    mine = http.get("/v1/orders", headers=buyer.headers).json()["orders"]
    assert [o["quantity"] for o in mine] == [2]  # two POSTs with one key: one order

    # The allocator's progress, written with its commits, now covers our request.
    progress = db.collection(LEASES).document(event["id"]).get().to_dict()["queue"]
    assert (progress["answered_through"] - queued_at).total_seconds() > -1  # clocks of two processes
    # Answered: the poll without the queue hints gives the order too.
    assert http.get(urlsplit(location).path, headers=buyer.headers).json()["order"]["id"] == mine[0]["id"]


def test_a_poll_with_a_malformed_arrival_time_is_a_422(http, user, db):
    buyer = user()
    r = http.get("/v1/purchases/o_abc?event_id=e1&queued_at=yesterday", headers=buyer.headers)
    assert r.status_code == 422
    naive = http.get("/v1/purchases/o_abc?event_id=e1&queued_at=2030-01-01T00:00:00", headers=buyer.headers)
    assert naive.status_code == 422
    ok = http.get("/v1/purchases/o_abc?event_id=e1&queued_at=2030-01-01T00:00:00Z", headers=buyer.headers)
    assert ok.status_code == 200 and ok.json()["queue"]["state"] == "waiting_for_allocator"
