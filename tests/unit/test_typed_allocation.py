"""The allocator's decision for events with ticket types and seats (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boxoffice.domain import errors
from boxoffice.domain.allocation import Grant, Refusal, RequestKind, Stock, TicketRequest, allocate
from boxoffice.domain.model import (
    Event,
    Order,
    choose_tickets_to_cancel,
    initial_shards,
    new_event,
    new_order,
    shard_quota,
    ticket_prices_of,
    ticket_seats_of,
    ticket_shards,
    ticket_types_of,
)
from boxoffice.domain.seating import RowSpec, SeatBook, SectionSpec, new_seat_map
from boxoffice.domain.ticket_types import Pool, TypeSpec

NOW = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)


def seated_event(rows: int = 2, seats_per_row: int = 6) -> Event:
    """Stalls (rows of seats), a VIP type with 4 seats of row A's middle, standing from a shared pool
    with an early-bird cap of 3 that closes at NOW + 1 day."""
    layout = new_seat_map([SectionSpec("st", tuple(
        RowSpec(chr(65 + r), 1, seats_per_row, "stalls", types={"vip": (2, 3, 4, 5)} if r == 0 else {})
        for r in range(rows)))])
    return new_event(
        event_id="ev", name="Gig", venue="Hall", starts_at=NOW + timedelta(days=30), price=None,
        currency="EUR", capacity=None, per_order_max=6,
        types=[TypeSpec("stalls", "Stalls", 3000, "EUR", 6), TypeSpec("vip", "VIP", 9000, "EUR", 2),
               TypeSpec("early", "Early", 1000, "EUR", 4, pool="floor", capacity=3, closes_at=NOW + timedelta(days=1)),
               TypeSpec("standing", "Standing", 2000, "EUR", 6, pool="floor")],
        pools=[Pool("floor", 10)], seat_map=layout,
    )


def stock_of(event: Event) -> Stock:
    pools: dict[str, dict[str, int]] = {}
    for shard in initial_shards(event):
        pools.setdefault(shard.pool, {})[shard.id] = shard.available
    return Stock(pools)


def req(n: int, user: str = "", **kw: object) -> TicketRequest:
    lines = kw.pop("lines", ())
    seats = kw.pop("seats", ())
    quantity = sum(q for _, q in lines) or len(seats)  # type: ignore[attr-defined]
    return TicketRequest(id=f"o{n}", kind=RequestKind.PURCHASE, event_id="ev", user_id=user or f"u{n}",
                         quantity=quantity, idempotency_key=f"k{n}", lines=tuple(lines), seats=tuple(seats),
                         arrived_at=NOW + timedelta(milliseconds=n))  # type: ignore[arg-type]


def test_a_mixed_order_takes_every_quota_of_every_line_and_records_prices_and_seats():
    event = seated_event()
    book = SeatBook(event.seat_map)
    result = allocate(event, stock_of(event), [req(1, lines=[("stalls", 2), ("early", 2), ("vip", 1)])], {},
                      seats=book, now=NOW)
    (grant,) = result.grants
    assert [(ln.type_id, ln.quantity, ln.unit_price, ln.seat_ids) for ln in grant.lines] == [
        ("stalls", 2, 3000, ("st:B:3", "st:B:4")), ("vip", 1, 9000, ("st:A:3",)), ("early", 2, 1000, ())]
    taken_by_quota: dict[str, int] = {}
    for sid, n in grant.allocations.items():
        quota = sid.rsplit(".", 1)[0]
        taken_by_quota[quota] = taken_by_quota.get(quota, 0) + n
    assert taken_by_quota == {"stalls": 2, "vip": 1, "floor": 2, "cap:early": 2}
    assert book.taken == {"st:B:3", "st:B:4", "st:A:3"}


def test_requests_are_seated_in_arrival_order_and_refusals_take_no_seat():
    event = seated_event()
    book = SeatBook(event.seat_map)
    result = allocate(event, stock_of(event), [
        req(1, lines=[("vip", 2)]), req(2, lines=[("vip", 2)]), req(3, lines=[("vip", 1)]),
        req(4, seats=["st:A:1", "st:A:2"]), req(5, seats=["st:A:1"]), req(6, seats=["st:Z:1"]),
    ], {}, seats=book, now=NOW)
    got = [(d.request.id, [s for ln in d.lines for s in ln.seat_ids]) if isinstance(d, Grant)
           else (d.request.id, type(d.error).__name__) for d in result.decisions]
    assert got == [("o1", ["st:A:3", "st:A:4"]), ("o2", ["st:A:2", "st:A:5"]), ("o3", "TicketTypeSoldOut"),
                   ("o4", "SeatUnavailable"), ("o5", ["st:A:1"]), ("o6", "SeatNotInMap")]
    assert result.grants[1].lines[0].seat_ids == ("st:A:2", "st:A:5")  # split: no two adjacent left
    assert book.taken == {"st:A:1", "st:A:2", "st:A:3", "st:A:4", "st:A:5"}


def test_caps_windows_unknown_types_and_per_type_limits_are_refused_by_name():
    event = seated_event()
    result = allocate(event, stock_of(event), [
        req(1, lines=[("early", 3)]), req(2, lines=[("early", 1)]), req(3, lines=[("lawn", 1)]),
        req(4, user="ann", lines=[("vip", 2)]), req(5, user="ann", lines=[("vip", 1)]),
        req(6, lines=[("standing", 8)]), req(7, lines=[("standing", 1)]),
    ], {}, counted_types={}, seats=SeatBook(event.seat_map), now=NOW)
    outcome = {d.request.id: "ok" if isinstance(d, Grant) else d.error.code for d in result.decisions}
    assert outcome == {"o1": "ok", "o2": "ticket_type_sold_out", "o3": "unknown_ticket_type", "o4": "ok",
                       "o5": "per_user_type_limit_exceeded", "o6": "invalid_quantity", "o7": "ok"}
    late = req(8, lines=[("early", 1)])
    late = TicketRequest(**{**late.__dict__, "arrived_at": NOW + timedelta(days=2)})
    (refusal,) = allocate(event, stock_of(event), [late], {}, seats=SeatBook(event.seat_map)).decisions
    assert isinstance(refusal, Refusal) and isinstance(refusal.error, errors.TicketTypeNotOnSale)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["stalls", "vip", "standing", "early"]), st.integers(1, 4)),
                min_size=1, max_size=60),
       st.integers(1, 5))
def test_over_many_batches_no_seat_is_sold_twice_and_seats_sold_equal_tickets_of_seated_types(script, batch):
    event = seated_event(rows=3, seats_per_row=8)
    book = SeatBook(event.seat_map)
    stock = stock_of(event)
    sold_seats: list[str] = []
    sold_by_type: dict[str, int] = {}
    requests = [req(i, lines=[line]) for i, line in enumerate(script)]
    for start in range(0, len(requests), batch):
        result = allocate(event, stock, requests[start:start + batch], {}, seats=book, now=NOW)
        stock = result.stock
        for grant in result.grants:
            for line in grant.lines:
                sold_seats.extend(line.seat_ids)
                sold_by_type[line.type_id] = sold_by_type.get(line.type_id, 0) + line.quantity
                assert len(line.seat_ids) == (line.quantity if line.type_id in ("stalls", "vip") else 0)
    assert len(sold_seats) == len(set(sold_seats))
    assert sold_by_type.get("stalls", 0) + sold_by_type.get("vip", 0) == len(sold_seats) == len(book.taken)
    assert sold_by_type.get("early", 0) <= 3 and sold_by_type.get("early", 0) + sold_by_type.get("standing", 0) <= 10
    assert all(n >= 0 for shards in stock.pools.values() for n in shards.values())


def _order_of(grant: Grant) -> Order:
    event = seated_event()
    order, _ = new_order(order_id="o1", event=event, user_id="u1", quantity=grant.request.quantity,
                         allocations=grant.allocations, idempotency_key="k1", lines=grant.lines)
    return order


def test_cancelled_tickets_of_a_mixed_order_go_back_to_every_quota_they_took_and_no_shard_more_than_it_gave():
    event = seated_event()
    (grant,) = allocate(event, stock_of(event), [req(1, lines=[("stalls", 2), ("early", 2), ("standing", 1)])], {},
                        seats=SeatBook(event.seat_map), now=NOW).grants
    order = _order_of(grant)
    shards = ticket_shards(order, lambda t: event.ticket_types.type(t).quota_ids)
    types = ticket_types_of(order)
    for ticket, sids in shards.items():
        assert sorted(shard_quota(s) for s in sids) == sorted(event.ticket_types.type(types[ticket]).quota_ids)
    per_shard: dict[str, int] = {}
    for sids in shards.values():
        for s in sids:
            per_shard[s] = per_shard.get(s, 0) + 1
    assert per_shard == dict(grant.allocations)  # cancelling every ticket gives back exactly what was taken
    assert ticket_prices_of(order) == dict(zip(order.ticket_ids, [3000, 3000, 1000, 1000, 2000], strict=True))
    assert ticket_seats_of(order) == dict(zip(order.ticket_ids[:2], grant.lines[0].seat_ids, strict=True))


def test_cancelling_by_type_takes_the_last_valid_tickets_of_that_type_and_refuses_what_the_order_lacks():
    event = seated_event()
    (grant,) = allocate(event, stock_of(event), [req(1, lines=[("stalls", 3), ("standing", 1)])], {},
                        seats=SeatBook(event.seat_map), now=NOW).grants
    order = _order_of(grant)
    t1, t2, t3, t4 = order.ticket_ids
    assert choose_tickets_to_cancel(order, [t1, t2, t3, t4], None, {"stalls": 2}) == [t2, t3]
    assert choose_tickets_to_cancel(order, [t1, t2, t4], None, {"stalls": 2, "standing": 1}) == [t1, t2, t4]
    with pytest.raises(errors.InvalidRequest, match="no tickets of type 'vip'"):
        choose_tickets_to_cancel(order, [t1, t2, t3, t4], None, {"vip": 1})
    with pytest.raises(errors.InvalidRequest, match="1 valid tickets of type 'stalls'"):
        choose_tickets_to_cancel(order, [t1, t4], None, {"stalls": 2})
    with pytest.raises(errors.InvalidRequest, match="by id or by type"):
        choose_tickets_to_cancel(order, [t1], [t1], {"stalls": 1})
