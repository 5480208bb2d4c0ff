"""Holds, cancellations, releases and the waitlist against the Firestore emulator."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from boxoffice.domain.errors import (
    EventNotOnSale,
    HoldExpired,
    HoldNotActive,
    NotAllowed,
    NotSoldOut,
    PerUserLimitExceeded,
    SoldOut,
)
from boxoffice.domain.model import HoldStatus, OrderStatus, SaleStatus
from boxoffice.services.audit import audit_inventory
from boxoffice.services.cancellations import cancel_order
from boxoffice.services.events import create_event, inventory
from boxoffice.services.holds import confirm_hold, get_hold, hold_tickets, release_expired_holds, release_hold
from boxoffice.services.purchasing import purchase_tickets
from boxoffice.services.releases import release_tickets, set_sale_status
from boxoffice.services.waitlist import join_waitlist, leave_waitlist


def make_event(db, capacity=20, shards=4, **kw):
    return create_event(db, name="Gig", venue="Hall", starts_at=datetime(2030, 1, 1, tzinfo=UTC), price=1500,
                        currency="EUR", capacity=capacity, shard_count=shards, **kw)


def totals(db, event_id):
    shards = inventory(db, event_id)
    return (sum(s.available for s in shards), sum(s.held for s in shards), sum(s.sold for s in shards))


def outbox_types(db):
    return sorted((s.to_dict() or {})["type"] for s in db.collection("outbox").stream())


def test_hold_moves_tickets_to_held_and_confirm_moves_them_to_sold_on_the_same_shards(db):
    event = make_event(db)
    hold = hold_tickets(db, event.id, "ann", 3, "k1")
    assert totals(db, event.id) == (17, 3, 0)
    assert hold_tickets(db, event.id, "ann", 3, "k1") == hold  # same key: the first hold
    result = confirm_hold(db, hold.id, "ann")
    assert not result.replayed and result.order.quantity == 3 and result.order.hold_id == hold.id
    assert dict(result.order.allocations) == dict(hold.allocations)
    assert totals(db, event.id) == (17, 0, 3)
    again = confirm_hold(db, hold.id, "ann")
    assert again.replayed and again.order.id == result.order.id
    assert totals(db, event.id) == (17, 0, 3)
    assert outbox_types(db) == ["order.confirmed"]
    assert get_hold(db, hold.id).status is HoldStatus.CONFIRMED
    assert audit_inventory(db, event.id, check_summary=False) == []


def test_per_user_limit_counts_held_and_bought_tickets(db):
    event = make_event(db, per_order_max=4, per_user_limit=4)
    hold_tickets(db, event.id, "ann", 3, "k1")
    with pytest.raises(PerUserLimitExceeded):
        purchase_tickets(db, event.id, "ann", 2, "buy1")
    purchase_tickets(db, event.id, "ann", 1, "buy2")
    with pytest.raises(PerUserLimitExceeded):
        hold_tickets(db, event.id, "ann", 1, "k2")


def test_confirming_an_expired_hold_is_a_clear_error_and_the_sweeper_returns_its_tickets(db):
    event = make_event(db)
    hold = hold_tickets(db, event.id, "ann", 2, "k1", ttl_s=60)
    later = datetime.now(UTC) + timedelta(minutes=2)
    with pytest.raises(HoldExpired):
        confirm_hold(db, hold.id, "ann", now=later)
    assert release_expired_holds(db, now=later) == 1
    assert release_expired_holds(db, now=later) == 0
    assert totals(db, event.id) == (20, 0, 0)
    with pytest.raises(HoldExpired):
        confirm_hold(db, hold.id, "ann")
    # the user's held count went back, so they can hold again up to the limit
    hold_tickets(db, event.id, "ann", 10, "k2")
    assert audit_inventory(db, event.id, check_summary=False) == []


def test_two_sweepers_racing_release_each_expired_hold_once(db):
    event = make_event(db, capacity=60, shards=6, per_order_max=3, per_user_limit=3)
    for i in range(20):
        hold_tickets(db, event.id, f"u{i}", 3, "k", ttl_s=1)
    assert totals(db, event.id) == (0, 60, 0)
    later = datetime.now(UTC) + timedelta(seconds=5)
    counts: list[int] = []
    barrier = threading.Barrier(2)

    def sweep():
        barrier.wait()
        counts.append(release_expired_holds(db, now=later))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(counts) == 20
    assert totals(db, event.id) == (60, 0, 0)
    assert audit_inventory(db, event.id, check_summary=False) == []


def test_release_and_confirm_race_has_one_winner(db):
    event = make_event(db)
    hold = hold_tickets(db, event.id, "ann", 2, "k1")
    release_hold(db, hold.id, "ann")
    assert release_hold(db, hold.id, "ann").status is HoldStatus.RELEASED  # twice: harmless
    with pytest.raises(HoldNotActive):
        confirm_hold(db, hold.id, "ann")
    with pytest.raises(NotAllowed):
        release_hold(db, hold.id, "bob")
    assert totals(db, event.id) == (20, 0, 0)


def test_partial_then_full_cancellation_returns_tickets_once_with_refunds_and_messages(db):
    event = make_event(db)
    order = purchase_tickets(db, event.id, "ann", 3, "buy").order
    first = cancel_order(db, order.id, "ann", ticket_ids=[order.ticket_ids[0]])
    assert first.status is OrderStatus.PARTIALLY_CANCELLED and first.cancelled_quantity == 1
    assert totals(db, event.id) == (18, 0, 2)
    assert cancel_order(db, order.id, "ann", ticket_ids=[order.ticket_ids[0]]).cancelled_quantity == 1  # again
    with pytest.raises(NotAllowed):
        cancel_order(db, order.id, "bob")
    full = cancel_order(db, order.id, "organiser", by_organiser=True)
    assert full.status is OrderStatus.CANCELLED and full.cancelled_quantity == 3
    assert cancel_order(db, order.id, "ann").cancelled_quantity == 3
    assert totals(db, event.id) == (20, 0, 0)
    refunds = [s.to_dict() for s in db.collection("refunds").stream()]
    assert sorted(r["quantity"] for r in refunds) == [1, 2] and sum(r["amount"] for r in refunds) == 4500
    assert outbox_types(db) == ["order.cancelled", "order.cancelled", "order.confirmed"]
    # cancelled tickets free the per-user limit
    assert db.collection("events").document(event.id).collection("buyers").document("ann").get().get("tickets") == 0
    assert audit_inventory(db, event.id, check_summary=False) == []


def test_concurrent_cancellations_of_one_order_void_each_ticket_once(db):
    event = make_event(db)
    order = purchase_tickets(db, event.id, "ann", 4, "buy").order
    threads = [threading.Thread(target=cancel_order, args=(db, order.id, "ann")) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert totals(db, event.id) == (20, 0, 0)
    assert len(list(db.collection("refunds").stream())) == 1
    assert audit_inventory(db, event.id, check_summary=False) == []


def test_release_reopens_a_sold_out_event_and_pause_close_refuse_sales(db):
    event = make_event(db, capacity=4, shards=2)
    purchase_tickets(db, event.id, "ann", 4, "buy")
    with pytest.raises(SoldOut):
        purchase_tickets(db, event.id, "bob", 1, "buy")
    grown = release_tickets(db, event.id, 5)
    assert grown.capacity == 9 and grown.shard_count == 3
    assert purchase_tickets(db, event.id, "bob", 2, "buy").order.quantity == 2
    set_sale_status(db, event.id, SaleStatus.PAUSED)
    with pytest.raises(EventNotOnSale):
        purchase_tickets(db, event.id, "cat", 1, "buy")
    set_sale_status(db, event.id, "on_sale")
    purchase_tickets(db, event.id, "cat", 1, "buy")
    set_sale_status(db, event.id, "closed")
    with pytest.raises(EventNotOnSale):
        hold_tickets(db, event.id, "dan", 1, "k")
    assert "tickets.released" in outbox_types(db)
    assert audit_inventory(db, event.id) == []  # set_sale_status refreshed the summary too


def test_waitlist_only_when_sold_out_and_offers_go_to_the_first_in_line(db):
    from boxoffice.services.summary import refresh_summary

    event = make_event(db, capacity=2, shards=1)
    with pytest.raises(NotSoldOut):
        join_waitlist(db, event.id, "wait1")
    order = purchase_tickets(db, event.id, "ann", 2, "buy").order
    refresh_summary(db, event.id, force=True)
    assert join_waitlist(db, event.id, "wait1").position == 1
    assert join_waitlist(db, event.id, "wait2").position == 2
    assert join_waitlist(db, event.id, "wait3").position == 3
    assert leave_waitlist(db, event.id, "wait3")
    cancel_order(db, order.id, "ann", ticket_ids=[order.ticket_ids[0]])
    refresh_summary(db, event.id, force=True)
    offers = [s.to_dict() for s in db.collection("outbox").stream() if s.get("type") == "waitlist.offer"]
    assert [o["payload"]["user_id"] for o in offers] == ["wait1"]
    types = outbox_types(db)
    assert "inventory.back_in_stock" in types and "inventory.sold_out" in types
