"""The allocator's pure decision (domain.allocation): arrival order, rules, pools, fairness audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from boxoffice.domain.allocation import (
    Answered,
    Grant,
    Refusal,
    RequestKind,
    Stock,
    TicketRequest,
    allocate,
    fifo_violations,
)
from boxoffice.domain.errors import (
    EventNotOnSale,
    IdempotencyConflict,
    InvalidQuantity,
    NotEnoughTickets,
    PerUserLimitExceeded,
    SoldOut,
)
from boxoffice.domain.model import SaleStatus, new_event

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def event(**kw):
    fields = dict(event_id="ev", name="Gig", venue="Hall", starts_at=T0, price=100, currency="EUR", capacity=10,
                  per_order_max=4, per_user_limit=4)
    fields.update(kw)
    return new_event(**fields)


def req(i: int, quantity: int = 1, user: str | None = None, kind: RequestKind = RequestKind.PURCHASE, rid=None,
        pool: str = "default") -> TicketRequest:
    return TicketRequest(id=rid or f"o_{i}", kind=kind, event_id="ev", user_id=user or f"u{i}", quantity=quantity,
                         idempotency_key=f"k{i}", arrived_at=T0 + timedelta(milliseconds=i), pool=pool)


def stock(**shards: int) -> Stock:
    return Stock({"default": dict(shards)})


def test_requests_are_served_in_arrival_order_until_sold_out():
    out = allocate(event(), stock(s000=2, s001=1), [req(i) for i in range(5)], {})
    assert [type(d) for d in out.decisions] == [Grant, Grant, Grant, Refusal, Refusal]
    assert all(isinstance(d.error, SoldOut) for d in out.decisions[3:])
    assert out.stock.total == 0 and sum(out.taken.values()) == 3


def test_a_larger_order_that_cannot_be_served_does_not_hold_back_a_smaller_later_one():
    out = allocate(event(), stock(s000=1), [req(1, quantity=2), req(2, quantity=1)], {})
    first, second = out.decisions
    assert isinstance(first, Refusal) and isinstance(first.error, NotEnoughTickets) and first.error.available == 1
    assert isinstance(second, Grant) and second.allocations == {"s000": 1}


def test_the_per_user_limit_counts_earlier_grants_of_the_same_batch_and_what_was_bought_before():
    out = allocate(event(), stock(s000=10), [req(1, 2, user="ann"), req(2, 2, user="ann"), req(3, 1, user="ann")],
                   {"ann": 1})
    assert [type(d) for d in out.decisions] == [Grant, Refusal, Grant]
    assert isinstance(out.decisions[1].error, PerUserLimitExceeded)
    assert out.counted["ann"] == 4


def test_a_repeated_request_is_decided_once_and_a_reused_key_with_other_parameters_is_a_conflict():
    same = req(1, rid="o_x")
    other = req(2, quantity=3, rid="o_x", user="u1")
    out = allocate(event(), stock(s000=10), [same, same, other], {})
    assert len(out.grants) == 1 and out.duplicates == [same]
    assert isinstance(out.decisions[1].error, IdempotencyConflict)


def test_sale_status_and_quantity_are_refused_per_request():
    out = allocate(event(status=SaleStatus.PAUSED), stock(s000=10), [req(1)], {})
    assert isinstance(out.decisions[0].error, EventNotOnSale)
    out = allocate(event(), stock(s000=10), [req(1, quantity=5)], {})
    assert isinstance(out.decisions[0].error, InvalidQuantity)


def test_grants_spread_over_shards_in_the_given_order_and_split_when_needed():
    out = allocate(event(), Stock({"default": {"s000": 3, "s001": 3, "s002": 3}}, order=["s002", "s000", "s001"]),
                   [req(1, quantity=4)], {})
    assert out.decisions[0].allocations == {"s002": 3, "s000": 1}


def test_pools_are_separate_inventories():
    pools = Stock({"default": {"s000": 1}, "vip": {"v000": 0}})
    out = allocate(event(), pools, [req(1, pool="vip"), req(2, pool="default")], {})
    assert isinstance(out.decisions[0].error, SoldOut)
    assert out.decisions[1].allocations == {"s000": 1}


def test_holds_take_from_the_same_stock_in_the_same_order():
    out = allocate(event(), stock(s000=1), [req(1, kind=RequestKind.HOLD), req(2)], {})
    assert isinstance(out.decisions[0], Grant) and isinstance(out.decisions[1].error, SoldOut)


@pytest.mark.parametrize("answers,expected", [
    # in order: earlier sold, later sold out
    ([Answered(1, 1, True, False), Answered(2, 1, False, True, True)], 0),
    # a later arrival got a ticket the earlier one, told "none left", was refused
    ([Answered(1, 1, False, True, True), Answered(2, 1, True, False)], 1),
    # "only 1 left" for 2 tickets, then a later single ticket: fair
    ([Answered(1, 2, False, True), Answered(2, 1, True, False)], 0),
    # refused 1 for lack of stock, a later arrival got 2
    ([Answered(1, 1, False, True), Answered(2, 2, True, False)], 1),
    # the same instant is not "later"
    ([Answered(1, 1, False, True, True), Answered(1, 1, True, False)], 0),
])
def test_fifo_violations_count_refusals_overtaken_by_a_later_arrival(answers, expected):
    assert fifo_violations(answers) == expected
