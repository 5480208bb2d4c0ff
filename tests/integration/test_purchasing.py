"""Purchasing against the real Firestore emulator: concurrency, idempotency, limits, bad input."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import firestore

from boxoffice.domain import errors
from boxoffice.domain.model import SaleStatus
from boxoffice.loadtest.baselines import CommitMode, purchase_directly
from boxoffice.loadtest.sale_audit import audit_sale
from boxoffice.loadtest.simulator import SimulationConfig, Strategy, run_simulation
from boxoffice.services.events import create_event, inventory
from boxoffice.services.purchasing import purchase_tickets


def an_event(db: firestore.Client, **overrides: object):
    fields: dict[str, object] = dict(
        name="Gig", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=7),
        price=2500, currency="EUR", capacity=20, per_order_max=4, per_user_limit=4,
    )
    fields.update(overrides)
    return create_event(db, **fields)  # type: ignore[arg-type]


def counts(db: firestore.Client) -> dict[str, int]:
    return {name: len(list(db.collection(name).select([]).stream())) for name in ("orders", "tickets", "outbox")}


def test_purchase_writes_order_tickets_buyer_record_and_outbox_together(db):
    event = an_event(db)
    result = purchase_tickets(db, event.id, "alice", 3, "k1")
    order = result.order
    assert not result.replayed and order.quantity == 3 and order.amount == 7500
    stored = db.collection("orders").document(order.id).get().to_dict()
    assert stored["status"] == "confirmed" and stored["user_id"] == "alice" and stored["committed_at"]
    tickets = [db.collection("tickets").document(t).get().to_dict() for t in order.ticket_ids]
    assert len(tickets) == 3 and all(t["status"] == "valid" and t["order_id"] == order.id for t in tickets)
    assert len({t["code"] for t in tickets}) == 3
    buyer = db.collection("events").document(event.id).collection("buyers").document("alice").get().to_dict()
    assert buyer["tickets"] == 3 and buyer["order_ids"] == [order.id]
    message = db.collection("outbox").document(f"{order.id}.confirmed").get().to_dict()
    assert message["type"] == "order.confirmed" and message["ordering_key"] == event.id
    assert message["payload"]["quantity"] == 3 and message["published_at"] is None
    assert sum(s.sold for s in inventory(db, event.id)) == 3
    assert audit_sale(db, event.id).ok


def test_retried_purchase_returns_the_first_order(db):
    event = an_event(db)
    first = purchase_tickets(db, event.id, "alice", 2, "same")
    again = purchase_tickets(db, event.id, "alice", 2, "same")
    assert again.replayed and again.order.id == first.order.id
    assert counts(db) == {"orders": 1, "tickets": 2, "outbox": 1}


def test_ten_concurrent_replays_of_one_key_make_one_order(db):
    event = an_event(db)
    barrier = threading.Barrier(10)

    def buy(i: int):
        barrier.wait()
        return purchase_tickets(db, event.id, "alice", 2, "one-key")

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(buy, range(10)))
    assert len({r.order.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert counts(db) == {"orders": 1, "tickets": 2, "outbox": 1}
    assert sum(s.sold for s in inventory(db, event.id)) == 2
    assert audit_sale(db, event.id).ok


def test_same_key_with_other_parameters_is_refused_and_changes_nothing(db):
    event = an_event(db)
    purchase_tickets(db, event.id, "alice", 2, "k")
    before = counts(db)
    with pytest.raises(errors.IdempotencyConflict):
        purchase_tickets(db, event.id, "alice", 3, "k")
    assert counts(db) == before


def test_one_users_concurrent_requests_stop_at_the_per_user_limit(db):
    event = an_event(db, capacity=50, per_order_max=1, per_user_limit=4)
    barrier = threading.Barrier(12)

    def buy(i: int) -> str:
        barrier.wait()
        try:
            purchase_tickets(db, event.id, "greedy", 1, f"k{i}")
            return "ok"
        except errors.PerUserLimitExceeded:
            return "limit"

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(buy, range(12)))
    assert outcomes.count("ok") == 4 and outcomes.count("limit") == 8
    buyer = db.collection("events").document(event.id).collection("buyers").document("greedy").get().to_dict()
    assert buyer["tickets"] == 4
    assert sum(s.sold for s in inventory(db, event.id)) == 4
    assert audit_sale(db, event.id).ok


@pytest.mark.parametrize(
    "call,error",
    [
        (lambda db, ev: purchase_tickets(db, "no-such-event", "alice", 1, "k"), errors.EventNotFound),
        (lambda db, ev: purchase_tickets(db, ev, "alice", 0, "k"), errors.InvalidQuantity),
        (lambda db, ev: purchase_tickets(db, ev, "alice", 5, "k"), errors.InvalidQuantity),
        (lambda db, ev: purchase_tickets(db, ev, "alice", "2", "k"), errors.InvalidQuantity),
        (lambda db, ev: purchase_tickets(db, ev, "alice", 1, "bad key!"), errors.InvalidRequest),
        (lambda db, ev: purchase_tickets(db, ev, "", 1, "k"), errors.InvalidRequest),
        (lambda db, ev: purchase_tickets(db, ev, "alice", 21, "k"), errors.InvalidQuantity),
    ],
)
def test_bad_input_is_a_named_error_and_nothing_is_written(db, call, error):
    event = an_event(db)
    before = [(s.id, s.available, s.sold) for s in inventory(db, event.id)]
    with pytest.raises(error):
        call(db, event.id)
    assert counts(db) == {"orders": 0, "tickets": 0, "outbox": 0}
    assert [(s.id, s.available, s.sold) for s in inventory(db, event.id)] == before


def test_an_event_not_on_sale_refuses_and_writes_nothing(db):
    event = an_event(db, status=SaleStatus.PAUSED)
    with pytest.raises(errors.EventNotOnSale):
        purchase_tickets(db, event.id, "alice", 1, "k")
    assert counts(db) == {"orders": 0, "tickets": 0, "outbox": 0}


def test_an_order_larger_than_any_shard_is_split_over_shards(db):
    event = an_event(db, capacity=8, shard_count=4, per_order_max=5, per_user_limit=5)
    order = purchase_tickets(db, event.id, "alice", 5, "k").order
    assert sum(order.allocations.values()) == 5 and len(order.allocations) >= 3
    assert sum(s.sold for s in inventory(db, event.id)) == 5
    assert audit_sale(db, event.id).ok


def test_asking_for_more_than_is_left_says_how_many_are_left(db):
    event = an_event(db, capacity=3, shard_count=3)
    purchase_tickets(db, event.id, "alice", 2, "k1")
    with pytest.raises(errors.NotEnoughTickets) as info:
        purchase_tickets(db, event.id, "bob", 2, "k2")
    assert info.value.available == 1
    purchase_tickets(db, event.id, "bob", 1, "k3")
    with pytest.raises(errors.SoldOut):
        purchase_tickets(db, event.id, "carol", 1, "k4")


@pytest.mark.parametrize("mode", list(CommitMode))
def test_the_one_purchase_per_commit_baselines_keep_the_guarantees(db, mode):
    event = an_event(db)
    order, _ = purchase_directly(db, event.id, "alice", 2, "k", mode=mode)
    again, _ = purchase_directly(db, event.id, "alice", 2, "k", mode=mode)
    assert again.id == order.id
    assert counts(db) == {"orders": 1, "tickets": 2, "outbox": 1}
    assert audit_sale(db, event.id).ok


def test_a_refused_key_may_succeed_when_asked_again_later(db):
    event = an_event(db, capacity=2, shard_count=1)
    purchase_tickets(db, event.id, "alice", 2, "k1")
    with pytest.raises(errors.SoldOut):
        purchase_tickets(db, event.id, "bob", 1, "bob-key")
    from boxoffice.services.releases import release_tickets

    release_tickets(db, event.id, 1)
    result = purchase_tickets(db, event.id, "bob", 1, "bob-key")
    assert not result.replayed and result.order.quantity == 1
    answer = db.collection("requests").document(result.order.id).get().to_dict()
    assert answer["outcome"] == "order" and answer["attempt"] == 2
    assert audit_sale(db, event.id).ok


def test_300_concurrent_buyers_for_100_tickets(db):
    # A generous deadline: this pins correctness under concurrency, not speed (the bench
    # measures speed), and the test machine may be busy with other work.
    result = run_simulation(db, SimulationConfig(buyers=300, tickets=100, concurrency=300, seed=1, deadline_s=30,
                                                 allocators=0))
    report = result.report()
    assert report["tickets_sold"] == 100
    assert report["sold_out"] == 200
    assert report["errors"] == 0
    assert report["oversold"] == 0
    assert report["fifo_violations"] == 0
    assert report["sales_per_commit"] > 1
    assert report["audit"]["ok"], report["audit"]["problems"]


def test_direct_sharded_baseline_never_oversells(db):
    result = run_simulation(db, SimulationConfig(buyers=150, tickets=40, concurrency=150, max_quantity=3, seed=2,
                                                 deadline_s=30, strategy=Strategy.DIRECT_SHARDED))
    report = result.report()
    assert report["tickets_sold"] <= 40 and report["oversold"] == 0
    assert report["audit"]["ok"], report["audit"]["problems"]


def test_single_document_baseline_is_slow_but_never_oversells(db):
    result = run_simulation(db, SimulationConfig(buyers=30, tickets=5, concurrency=30, seed=3,
                                                 strategy=Strategy.SINGLE_DOCUMENT, deadline_s=20))
    report = result.report()
    assert report["tickets_sold"] <= 5 and report["oversold"] == 0
    assert report["audit"]["ok"], report["audit"]["problems"]


def test_the_audit_catches_an_oversold_shard_and_a_missing_ticket(db):
    event = an_event(db, capacity=4, shard_count=2)
    order = purchase_tickets(db, event.id, "alice", 2, "k").order
    assert audit_sale(db, event.id).ok
    shard = next(iter(order.allocations))
    db.collection("events").document(event.id).collection("inventory").document(shard).update(
        {"available": -1, "sold": 3 + 2 - 1}
    )
    db.collection("tickets").document(order.ticket_ids[0]).delete()
    audit = audit_sale(db, event.id, {order.id: "sold_out"})
    text = " | ".join(audit.problems)
    assert not audit.ok
    assert "negative" in text and "1 valid tickets but shards say sold=4" in text and "told no" in text


def test_an_instance_that_knows_the_event_is_sold_out_refuses_at_once_without_queueing(db):
    from boxoffice.services.cancellations import cancel_order
    from boxoffice.services.summary import refresh_summary

    event = an_event(db, capacity=2)
    sold = purchase_tickets(db, event.id, "alice", 2, "k-a").order
    refresh_summary(db, event.id, min_interval_s=0)  # the summary now shows nothing left
    with pytest.raises(errors.SoldOut) as refused:
        purchase_tickets(db, event.id, "bob", 1, "k-b")
    assert refused.value.at_instance
    # Nothing was queued: no request document for bob, no order.
    assert [s.to_dict()["user_id"] for s in db.collection("requests").stream()] == ["alice"]
    assert counts(db)["orders"] == 1

    # A ticket comes back: once the summary shows it, the next buyer is queued and gets it.
    cancel_order(db, sold.id, "alice", ticket_ids=[sold.ticket_ids[0]])
    refresh_summary(db, event.id, min_interval_s=0)
    assert purchase_tickets(db, event.id, "bob", 1, "k-b").order.quantity == 1
    assert audit_sale(db, event.id).ok
