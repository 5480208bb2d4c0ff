"""Cancellations and holds of events with ticket types and seats, on the real emulators.

A ticket goes back to every quota its type took from, the buyer's per-type counts follow, a
refund is priced per line; a freed seat (a cancelled ticket, a hold released or expired) is
sellable again and its section document shows it free, with the allocator as the only writer
that takes seats. Bad input is refused with nothing written.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from tests.e2e.conftest import database_dump

from boxoffice.domain.errors import (
    InvalidRequest,
    NotSoldOut,
    PerUserTypeLimitExceeded,
    SeatNotInMap,
    SeatUnavailable,
    TicketTypeSoldOut,
    UnknownTicketType,
)
from boxoffice.domain.model import HoldStatus, OrderStatus
from boxoffice.services.audit import audit_inventory
from boxoffice.services.cancellations import cancel_order
from boxoffice.services.events import create_event
from boxoffice.services.holds import confirm_hold, hold_tickets, release_expired_holds, release_hold
from boxoffice.services.purchasing import purchase_tickets
from boxoffice.services.releases import release_tickets

TYPES = {"types": [
    {"id": "stalls", "name": "Stalls", "price": 5000, "per_order_max": 4, "per_user_limit": 4},
    {"id": "early", "name": "Early bird", "price": 1000, "pool": "floor", "capacity": 3},
    {"id": "standing", "name": "Standing", "price": 2000, "pool": "floor"},
], "pools": [{"id": "floor", "capacity": 10}]}
SEATS = {"sections": [
    {"id": "front", "rows": [{"id": "A", "first": 1, "last": 4, "type": "stalls"}]},
    {"id": "back", "rows": [{"id": "B", "first": 1, "last": 4, "type": "stalls"}]},
]}


def typed_event(db):
    return create_event(db, name="Seated", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=3),
                        per_order_max=6, per_user_limit=10, types=TYPES, seats=SEATS)


def counts(db, event_id) -> dict[str, dict[str, int]]:
    """quota -> {available, held, sold}, from the shards."""
    out: dict[str, dict[str, int]] = {}
    for snap in db.collection("events").document(event_id).collection("inventory").stream():
        d = snap.to_dict()
        c = out.setdefault(d["pool"], {"available": 0, "held": 0, "sold": 0})
        for k in c:
            c[k] += d[k]
    return out


def seat_docs(db, event_id) -> set[str]:
    return {s.id for s in db.collection("events").document(event_id).collection("seats").stream()}


def shown_taken(db, event_id, want: set[str], within_s: float = 15.0) -> set[str]:
    """The seats the section documents show taken, once they show ``want`` (or after ``within_s``)."""
    sections = db.collection("events").document(event_id).collection("sections")
    give_up = time.monotonic() + within_s
    while True:
        shown = {t for s in sections.stream() for t in (s.to_dict() or {}).get("taken", ())}
        if shown == want or time.monotonic() > give_up:
            return shown
        time.sleep(0.3)


def buyer(db, event_id, user) -> dict:
    return db.collection("events").document(event_id).collection("buyers").document(user).get().to_dict() or {}


def test_cancelling_lines_of_a_mixed_order_refunds_each_at_its_price_to_every_quota_and_frees_the_seat(db):
    event = typed_event(db)
    order = purchase_tickets(db, event.id, "ann", None, "k1", types={"stalls": 2, "early": 2, "standing": 1}).order
    seats = [s for ln in order.lines for s in ln.seat_ids]
    assert len(seats) == 2 and seat_docs(db, event.id) == set(seats)
    assert counts(db, event.id)["cap:early"]["sold"] == 2 and counts(db, event.id)["floor"]["sold"] == 3

    after = cancel_order(db, order.id, "ann", types={"stalls": 1, "early": 1})
    assert after.status is OrderStatus.PARTIALLY_CANCELLED and after.cancelled_quantity == 2
    refund = next(iter(db.collection("refunds").stream())).to_dict()
    assert refund["amount"] == 5000 + 1000 and refund["quantity"] == 2
    c = counts(db, event.id)
    assert (c["stalls"]["sold"], c["floor"]["sold"], c["cap:early"]["sold"], c["cap:standing"]["sold"]) == (1, 2, 1, 1)
    assert buyer(db, event.id, "ann")["types"] == {"stalls": 1, "early": 1, "standing": 1}
    assert buyer(db, event.id, "ann")["tickets"] == 3
    # The last stalls ticket of the line was cancelled: its seat document is gone, the other stays.
    freed, kept = seats[1], seats[0]
    assert seat_docs(db, event.id) == {kept}
    assert audit_inventory(db, event.id, check_summary=False) == []
    # The allocator frees the seat in its book: the section shows it free, and it sells again.
    assert shown_taken(db, event.id, {kept}) == {kept}
    again = purchase_tickets(db, event.id, "bob", None, "k2", seats=[freed]).order
    assert again.lines[0].seat_ids == (freed,)
    assert shown_taken(db, event.id, {kept, freed}) == {kept, freed}

    whole = cancel_order(db, order.id, "ann")  # the rest, priced per line
    assert whole.status is OrderStatus.CANCELLED
    amounts = sorted(r.to_dict()["amount"] for r in db.collection("refunds").stream())
    assert amounts == sorted([6000, 5000 + 1000 + 2000])
    assert buyer(db, event.id, "ann")["types"] == {"stalls": 0, "early": 0, "standing": 0}
    assert seat_docs(db, event.id) == {freed}
    assert audit_inventory(db, event.id, check_summary=False) == []
    assert cancel_order(db, order.id, "ann").cancelled_quantity == 5  # twice: harmless
    assert audit_inventory(db, event.id, check_summary=False) == []


@pytest.mark.parametrize("kwargs,message", [
    ({"types": {"vip": 1}}, "no tickets of type 'vip'"),
    ({"types": {"stalls": 3}}, "2 valid tickets of type 'stalls'"),
    ({"ticket_ids": ["o_someone-else-t01"]}, "not part of order"),
    ({"ticket_ids": [], "types": {"stalls": 1}}, "by id or by type"),
])
def test_a_cancellation_naming_what_the_order_lacks_is_refused_with_nothing_written(db, stack, kwargs, message):
    event = typed_event(db)
    order = purchase_tickets(db, event.id, "ann", None, "k1", types={"stalls": 2, "standing": 1}).order
    seats = {s for ln in order.lines for s in ln.seat_ids}
    assert shown_taken(db, event.id, seats) == seats  # the allocator's section write is done: the dump holds still
    before = database_dump(stack)
    with pytest.raises(InvalidRequest, match=message):
        cancel_order(db, order.id, "ann", **kwargs)
    assert database_dump(stack) == before


def test_types_on_a_single_type_order_are_refused_with_nothing_written(db, stack):
    event = create_event(db, name="Gig", venue="Hall", starts_at=datetime(2030, 1, 1, tzinfo=UTC), price=1500,
                         currency="EUR", capacity=10)
    order = purchase_tickets(db, event.id, "ann", 2, "k1").order
    before = database_dump(stack)
    with pytest.raises(InvalidRequest, match="no ticket types"):
        cancel_order(db, order.id, "ann", types={"general": 1})
    assert database_dump(stack) == before


def test_held_seats_are_nobody_elses_until_the_hold_ends_and_confirm_keeps_seats_and_prices(db):
    event = typed_event(db)
    hold = hold_tickets(db, event.id, "ann", None, "h1", seats=["front:A:2", "front:A:3"], ttl_s=60)
    assert hold.seat_ids == ("front:A:2", "front:A:3") and [ln.unit_price for ln in hold.lines] == [5000]
    assert seat_docs(db, event.id) == {"front:A:2", "front:A:3"}
    assert counts(db, event.id)["stalls"]["held"] == 2
    with pytest.raises(SeatUnavailable, match="front:A:3"):
        hold_tickets(db, event.id, "bob", None, "h2", seats=["front:A:3"])
    with pytest.raises(SeatUnavailable):
        purchase_tickets(db, event.id, "bob", None, "p2", seats=["front:A:2", "front:A:4"])
    # Best available skips the held seats: row A keeps 1 and 4 (not together), row B has 4 free.
    best = hold_tickets(db, event.id, "bob", None, "h3", types={"stalls": 2, "standing": 1}, ttl_s=60)
    assert best.lines[0].seat_ids == ("back:B:2", "back:B:3")
    assert audit_inventory(db, event.id, check_summary=False) == []
    assert shown_taken(db, event.id, {"front:A:2", "front:A:3", "back:B:2", "back:B:3"}) == {
        "front:A:2", "front:A:3", "back:B:2", "back:B:3"}

    result = confirm_hold(db, hold.id, "ann")
    assert [(ln.type_id, ln.seat_ids, ln.unit_price) for ln in result.order.lines] == [
        ("stalls", ("front:A:2", "front:A:3"), 5000)]
    seat = db.collection("events").document(event.id).collection("seats").document("front:A:2").get().to_dict()
    assert (seat["order_id"], seat["ticket_id"], seat["hold_id"]) == (result.order.id, result.order.ticket_ids[0], hold.id)
    c = counts(db, event.id)
    assert (c["stalls"]["held"], c["stalls"]["sold"], c["floor"]["held"]) == (2, 2, 1)  # bob's hold is still live
    assert buyer(db, event.id, "ann")["types"] == {"stalls": 2} and buyer(db, event.id, "ann")["held_types"] == {
        "stalls": 0}
    assert audit_inventory(db, event.id, check_summary=False) == []

    released = release_hold(db, best.id, "bob")
    assert released.status is HoldStatus.RELEASED
    assert seat_docs(db, event.id) == {"front:A:2", "front:A:3"}
    assert shown_taken(db, event.id, {"front:A:2", "front:A:3"}) == {"front:A:2", "front:A:3"}
    again = purchase_tickets(db, event.id, "cy", None, "p3", seats=["back:B:2", "back:B:3"]).order
    assert again.lines[0].seat_ids == ("back:B:2", "back:B:3")
    assert audit_inventory(db, event.id, check_summary=False) == []


def test_an_expired_hold_gives_its_seats_and_tickets_back_and_they_sell_again(db):
    event = typed_event(db)
    hold = hold_tickets(db, event.id, "ann", None, "h1", types={"stalls": 4, "early": 2}, ttl_s=0.5)
    assert hold.seat_ids == ("front:A:1", "front:A:2", "front:A:3", "front:A:4")
    with pytest.raises(SeatUnavailable):
        hold_tickets(db, event.id, "bob", None, "h2", seats=[hold.seat_ids[0]])
    time.sleep(0.6)
    assert release_expired_holds(db) == 1
    assert seat_docs(db, event.id) == set()
    c = counts(db, event.id)
    assert (c["stalls"]["held"], c["cap:early"]["held"], c["floor"]["held"]) == (0, 0, 0)
    assert buyer(db, event.id, "ann")["held_types"] == {"stalls": 0, "early": 0}
    assert shown_taken(db, event.id, set()) == set()
    order = purchase_tickets(db, event.id, "bob", None, "p2", seats=list(hold.seat_ids)).order
    assert order.lines[0].seat_ids == hold.seat_ids
    assert purchase_tickets(db, event.id, "cy", None, "p3", types={"early": 3}).order.quantity == 3
    assert audit_inventory(db, event.id, check_summary=False) == []


def test_held_tickets_count_against_the_per_type_limit(db):
    event = typed_event(db)
    hold_tickets(db, event.id, "ann", None, "h1", types={"stalls": 3}, ttl_s=60)
    with pytest.raises(PerUserTypeLimitExceeded):
        purchase_tickets(db, event.id, "ann", None, "p1", types={"stalls": 2})
    assert purchase_tickets(db, event.id, "ann", None, "p2", types={"stalls": 1}).order.quantity == 1


def test_holding_what_the_map_or_catalogue_lacks_is_refused_and_holds_nothing(db):
    event = typed_event(db)
    with pytest.raises(SeatNotInMap):
        hold_tickets(db, event.id, "ann", None, "h1", seats=["front:Z:9"])
    with pytest.raises(UnknownTicketType):
        hold_tickets(db, event.id, "ann", None, "h2", types={"boxes": 1})
    assert list(db.collection("holds").stream()) == []
    assert seat_docs(db, event.id) == set()
    assert all(c["held"] == 0 for c in counts(db, event.id).values())
    assert audit_inventory(db, event.id, check_summary=False) == []


def test_releasing_a_capped_type_of_a_shared_pool_sells_more_of_it_and_bad_releases_write_nothing(db, stack):
    event = typed_event(db)  # floor: 10, early capped at 3, standing sized by the pool
    purchase_tickets(db, event.id, "ann", None, "k1", types={"early": 3})
    with pytest.raises(TicketTypeSoldOut):
        purchase_tickets(db, event.id, "bob", None, "k2", types={"early": 1})
    after = release_tickets(db, event.id, 2, type_id="early")
    assert after.capacity == event.capacity + 2
    c = counts(db, event.id)
    # standing was sized by the pool: it grows with it (10 -> 12), none of it sold
    assert (c["floor"]["available"], c["cap:early"]["available"], c["cap:standing"]["available"]) == (9, 2, 12)
    assert purchase_tickets(db, event.id, "bob", None, "k3", types={"early": 2}).order.quantity == 2
    assert audit_inventory(db, event.id, check_summary=False) == []

    before = database_dump(stack)
    with pytest.raises(InvalidRequest, match="seated"):
        release_tickets(db, event.id, 2, type_id="stalls")
    with pytest.raises(InvalidRequest, match="name the type"):
        release_tickets(db, event.id, 2)
    with pytest.raises(UnknownTicketType):
        release_tickets(db, event.id, 2, type_id="boxes")
    assert database_dump(stack) == before


def test_a_waiter_for_a_sold_out_type_is_offered_that_type_when_it_comes_back_and_no_other(db, stack):
    from boxoffice.services.summary import refresh_summary
    from boxoffice.services.waitlist import join_waitlist

    event = typed_event(db)
    with pytest.raises(InvalidRequest, match="name the type"):
        join_waitlist(db, event.id, "wes")
    with pytest.raises(NotSoldOut):
        join_waitlist(db, event.id, "wes", "early")
    order = purchase_tickets(db, event.id, "ann", None, "k1", types={"early": 3, "standing": 1}).order
    refresh_summary(db, event.id, force=True)
    with pytest.raises(NotSoldOut):  # early is gone, standing is not
        join_waitlist(db, event.id, "sam", "standing")
    with pytest.raises(UnknownTicketType):
        join_waitlist(db, event.id, "wes", "boxes")
    assert join_waitlist(db, event.id, "wes", "early").position == 1
    assert join_waitlist(db, event.id, "val", "early").position == 2
    cancel_order(db, order.id, "ann", types={"standing": 1})  # standing comes back: no early waiter is offered
    refresh_summary(db, event.id, force=True)
    assert [s for s in db.collection("outbox").stream() if s.get("type") == "waitlist.offer"] == []
    cancel_order(db, order.id, "ann", types={"early": 1})
    refresh_summary(db, event.id, force=True)
    offers = [s.to_dict()["payload"] for s in db.collection("outbox").stream() if s.get("type") == "waitlist.offer"]
    assert [(o["user_id"], o["type_id"], o["quantity"]) for o in offers] == [("wes", "early", 1)]
