"""The summary, its notices and the change bookkeeping of the inventory trigger: pure, no database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from boxoffice.domain.availability import (
    Summary,
    compute_summary,
    is_reflected,
    notices,
    offers_by_type,
    offers_to_make,
    same_counts,
    wait_before_write,
)
from boxoffice.domain.errors import HoldExpired, HoldNotActive, InvalidSaleTransition
from boxoffice.domain.model import (
    Hold,
    HoldStatus,
    InventoryShard,
    Order,
    SaleStatus,
    ShardMove,
    cancel_order_tickets,
    choose_tickets_to_cancel,
    next_sale_status,
    shard_deltas,
    ticket_shards,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def shard(sid, cap, avail, held=0, sold=0):
    return InventoryShard(id=sid, capacity=cap, available=avail, held=held, sold=sold)


def test_summary_adds_up_the_shards_and_names_the_state():
    s = compute_summary([shard("s0", 10, 0, 3, 7), shard("s1", 10, 2, 0, 8)], SaleStatus.ON_SALE, 5)
    assert (s.available, s.held, s.sold, s.capacity, s.state, s.low_stock) == (2, 3, 15, 20, "on_sale", True)
    assert compute_summary([shard("s0", 5, 0, 1, 4)], SaleStatus.ON_SALE, 1).state == "sold_out"
    assert compute_summary([shard("s0", 5, 5)], SaleStatus.PAUSED, 1).state == "paused"


def test_a_change_is_reflected_once_the_summary_snapshot_is_not_older():
    summary = {"as_of": T0}
    assert is_reflected(summary, T0 - timedelta(seconds=1))
    assert is_reflected(summary, T0)  # duplicate of the change the summary was computed after
    assert not is_reflected(summary, T0 + timedelta(microseconds=1))
    assert not is_reflected({}, T0) and not is_reflected(summary, None)


def test_out_of_order_changes_older_than_the_summary_are_no_ops():
    # Changes c1 < c2 delivered c2 first: the summary written for c2 covers c1 too.
    c1, c2 = T0, T0 + timedelta(milliseconds=5)
    after_c2 = {"as_of": c2 + timedelta(milliseconds=1)}
    assert is_reflected(after_c2, c1) and is_reflected(after_c2, c2)


def test_the_event_document_is_written_at_most_once_per_interval():
    written = {"written_at": T0}
    assert wait_before_write(written, T0 + timedelta(milliseconds=300), 1.0) == pytest.approx(0.7)
    assert wait_before_write(written, T0 + timedelta(seconds=2), 1.0) == 0.0
    assert wait_before_write({}, T0, 1.0) == 0.0


def test_a_write_that_touches_no_count_needs_no_summary():
    assert same_counts({"capacity": 1, "available": 1, "held": 0, "sold": 0, "x": 1},
                       {"capacity": 1, "available": 1, "held": 0, "sold": 0, "x": 2})
    assert not same_counts(None, {"capacity": 1})
    assert not same_counts({"capacity": 1, "available": 1}, {"capacity": 1, "available": 0})


def test_notices_for_sold_out_back_in_stock_and_low_stock():
    def summary(avail):
        return compute_summary([shard("s0", 100, avail, 0, 100 - avail)], SaleStatus.ON_SALE, 10)

    assert notices({"available": 3}, summary(0), 10) == ["inventory.sold_out"]
    assert notices({"available": 0}, summary(4), 10) == ["inventory.back_in_stock"]
    assert notices({"available": 50}, summary(10), 10) == ["inventory.low_stock"]
    assert notices({"available": 9}, summary(8), 10) == []  # already low: said once
    assert notices({"available": 50}, summary(0), 10) == ["inventory.sold_out"]
    assert notices(None, summary(0), 10) == []
    assert offers_to_make({"available": 0}, summary(3)) == 3
    assert offers_to_make({"available": 5}, summary(3)) == 0


def test_shard_moves_keep_the_counts_adding_up():
    s = shard("s0", 10, 6, 2, 2)
    for move in ShardMove:
        d = shard_deltas(move, 2)
        after = InventoryShard(id="s0", capacity=s.capacity + d.get("capacity", 0),
                               available=s.available + d.get("available", 0),
                               held=s.held + d.get("held", 0), sold=s.sold + d.get("sold", 0))
        assert after.available + after.held + after.sold == after.capacity
    assert s.hold(6).available == 0 and s.hold(6).held == 8


def test_cancelled_tickets_go_back_to_a_stable_shard_and_twice_is_a_no_op():
    order = Order(id="o1", event_id="e", user_id="u", quantity=3, unit_price=100, currency="EUR",
                  allocations={"s9": 1, "s2": 2}, idempotency_key="k", ticket_ids=("o1-t01", "o1-t02", "o1-t03"))
    assert ticket_shards(order) == {"o1-t01": ("s2",), "o1-t02": ("s2",), "o1-t03": ("s9",)}
    assert choose_tickets_to_cancel(order, ["o1-t02", "o1-t03"], None) == ["o1-t02", "o1-t03"]
    assert choose_tickets_to_cancel(order, [], ["o1-t01"]) == []
    assert cancel_order_tickets(order, 3).status.value == "cancelled"


def test_hold_rules_and_sale_transitions():
    hold = Hold(id="h", event_id="e", user_id="u", quantity=1, allocations={"s0": 1}, expires_at=T0)
    hold.require_confirmable(T0 - timedelta(seconds=1))
    with pytest.raises(HoldExpired):
        hold.require_confirmable(T0)
    with pytest.raises(HoldNotActive):
        Hold(**{**hold.__dict__, "status": HoldStatus.RELEASED}).require_confirmable(T0 - timedelta(1))
    assert next_sale_status(SaleStatus.ON_SALE, SaleStatus.PAUSED) is SaleStatus.PAUSED
    with pytest.raises(InvalidSaleTransition):
        next_sale_status(SaleStatus.CLOSED, SaleStatus.ON_SALE)


def test_offers_of_an_event_with_types_follow_what_came_back_of_each_type():
    new = Summary(available=5, held=0, sold=5, capacity=10, state="on_sale", low_stock=False, shards=2,
                  types={"early": {"available": 2}, "standing": {"available": 3}, "vip": {"available": 0}})
    before = {"types": {"early": {"available": 0}, "standing": {"available": 3}, "vip": {"available": 1}}}
    assert offers_by_type(before, new) == {"early": 2}
    assert offers_by_type(None, new) == {}
    assert offers_by_type(before, replace(new, state="paused")) == {}


# --- what an app instance may refuse at once (gone_per_summary) ------------------------------

def test_an_instance_refuses_a_single_type_event_at_once_only_when_its_summary_shows_nothing_left():
    from boxoffice.domain.availability import gone_per_summary

    assert gone_per_summary({"available": 0, "held": 3}, (), typed=False) == ""
    assert gone_per_summary({"available": 1}, (), typed=False) is None
    assert gone_per_summary(None, (), typed=False) is None  # no summary yet: ask the allocator
    assert gone_per_summary({}, (), typed=False) is None


def test_an_instance_refuses_a_typed_request_at_once_only_for_a_type_shown_with_nothing_left():
    from boxoffice.domain.availability import gone_per_summary

    summary = {"available": 5, "types": {"vip": {"available": 0}, "floor": {"available": 5}}}
    assert gone_per_summary(summary, (("floor", 2), ("vip", 1)), typed=True) == "vip"
    assert gone_per_summary(summary, (("floor", 2),), typed=True) is None
    assert gone_per_summary(summary, (("unknown", 1),), typed=True) is None  # the allocator names the error
    # A typed event asked without lines (its default type) is left to the allocator.
    assert gone_per_summary({"available": 0, "types": {}}, (), typed=True) is None
