"""The pure rules of events, inventory shards, orders and allocation."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from boxoffice.domain import errors
from boxoffice.domain.model import (
    MAX_SHARDS,
    Event,
    InventoryShard,
    Order,
    SaleStatus,
    default_shard_count,
    new_event,
    order_id_for,
    plan_allocation,
    split_capacity,
    ticket_ids_for,
)
from boxoffice.retry import Backoff

START = datetime(2027, 1, 1, 20, 0, tzinfo=UTC)


def make_event(**overrides: object) -> Event:
    fields: dict[str, object] = dict(
        event_id="ev1", name="Gig", venue="Hall", starts_at=START, price=2500, currency="EUR",
        capacity=100, per_order_max=4, per_user_limit=6,
    )
    fields.update(overrides)
    return new_event(**fields)  # type: ignore[arg-type]


def test_default_shard_count_is_about_ten_tickets_a_shard_and_bounded():
    assert default_shard_count(1) == 1
    assert default_shard_count(100) == 10
    assert default_shard_count(1000) == 100
    assert default_shard_count(1_000_000) == MAX_SHARDS


@pytest.mark.parametrize("capacity,shards", [(100, 10), (101, 10), (7, 3), (1000, 100)])
def test_split_capacity_is_even_and_adds_up(capacity: int, shards: int):
    parts = split_capacity(capacity, shards)
    assert len(parts) == shards and sum(parts) == capacity
    assert max(parts) - min(parts) <= 1


def test_new_event_defaults():
    event = make_event(per_user_limit=None, shard_count=None, low_stock_threshold=None)
    assert event.per_user_limit == event.per_order_max == 4
    assert event.shard_count == 10
    assert event.low_stock_threshold == 10
    assert event.status is SaleStatus.ON_SALE


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        ({"name": "  "}, "name must not be empty"),
        ({"venue": ""}, "venue must not be empty"),
        ({"starts_at": datetime(2027, 1, 1)}, "time zone"),
        ({"price": -1}, "price"),
        ({"price": 12.5}, "price"),
        ({"currency": "euro"}, "currency"),
        ({"capacity": 0}, "capacity"),
        ({"per_order_max": 0}, "per_order_max"),
        ({"per_order_max": 51}, "per_order_max"),
        ({"per_user_limit": 2}, "per_user_limit must not be below per_order_max"),
        ({"shard_count": 0}, "shard_count"),
        ({"shard_count": 101}, "shard_count must not exceed capacity"),
        ({"hold_minutes": 0}, "hold_minutes"),
    ],
)
def test_new_event_rejects_bad_input_with_a_reason(overrides: dict[str, object], fragment: str):
    with pytest.raises(errors.InvalidRequest, match=fragment):
        make_event(**overrides)


def test_quantity_must_be_within_the_per_order_maximum():
    event = make_event()
    event.validate_quantity(1)
    event.validate_quantity(4)
    for bad in (0, 5, -1, True, 2.0):
        with pytest.raises(errors.InvalidQuantity):
            event.validate_quantity(bad)  # type: ignore[arg-type]


def test_per_user_limit_counts_what_the_user_already_has():
    event = make_event()
    event.check_user_limit(already=2, quantity=4)
    with pytest.raises(errors.PerUserLimitExceeded) as info:
        event.check_user_limit(already=3, quantity=4)
    assert info.value.limit == 6 and info.value.already == 3


def test_an_event_not_on_sale_refuses_purchases():
    with pytest.raises(errors.EventNotOnSale, match="paused"):
        make_event(status=SaleStatus.PAUSED).require_on_sale()


def test_shard_take_moves_available_to_sold_and_never_below_zero():
    shard = InventoryShard(id="s000", capacity=10, available=3, held=2, sold=5)
    after = shard.take(3)
    assert (after.available, after.held, after.sold) == (0, 2, 8)
    with pytest.raises(errors.SoldOut):
        after.take(1)


def test_shard_counts_must_add_up():
    with pytest.raises(ValueError):
        InventoryShard(id="s000", capacity=10, available=5, held=0, sold=4)
    with pytest.raises(ValueError):
        InventoryShard(id="s000", capacity=0, available=-1, held=0, sold=1)


def shards(*available: int) -> list[InventoryShard]:
    return [InventoryShard(id=f"s{i:03d}", capacity=10, available=a, sold=10 - a) for i, a in enumerate(available)]


def test_allocation_prefers_one_shard_that_can_serve_the_whole_order():
    plan = plan_allocation(shards(1, 5, 0, 2), 3, "ev1", random.Random(1))
    assert plan == {"s001": 3}


def test_allocation_spreads_buyers_over_the_shards_that_can_serve_them():
    chosen = {next(iter(plan_allocation(shards(5, 5, 5, 5), 1, "ev1", random.Random(seed)))) for seed in range(50)}
    assert chosen == {"s000", "s001", "s002", "s003"}


def test_allocation_splits_an_order_no_single_shard_can_serve():
    plan = plan_allocation(shards(2, 1, 2, 0), 4, "ev1", random.Random(3))
    assert sum(plan.values()) == 4
    stock = {s.id: s.available for s in shards(2, 1, 2, 0)}
    assert all(0 < n <= stock[sid] for sid, n in plan.items())


def test_allocation_says_sold_out_or_how_many_are_left():
    with pytest.raises(errors.SoldOut) as sold_out:
        plan_allocation(shards(0, 0), 1, "ev1", random.Random())
    assert not isinstance(sold_out.value, errors.NotEnoughTickets)
    with pytest.raises(errors.NotEnoughTickets) as not_enough:
        plan_allocation(shards(1, 1), 3, "ev1", random.Random())
    assert not_enough.value.available == 2


def test_order_id_derives_from_user_and_key_only():
    assert order_id_for("alice", "k1") == order_id_for("alice", "k1")
    assert order_id_for("alice", "k1") != order_id_for("bob", "k1")
    assert order_id_for("alice", "k1") != order_id_for("alice", "k2")
    for bad in ("", "x" * 129, "has space", "slash/no"):
        with pytest.raises(errors.InvalidRequest):
            order_id_for("alice", bad)


def test_ticket_ids_are_numbered_within_the_order():
    assert ticket_ids_for("o_1", 2) == ["o_1-t01", "o_1-t02"]


def test_same_key_with_other_parameters_is_a_conflict():
    order = Order(id="o_1", event_id="ev1", user_id="alice", quantity=2, unit_price=100, currency="EUR",
                  allocations={"s000": 2}, idempotency_key="k1", ticket_ids=("o_1-t01", "o_1-t02"))
    order.require_same_request("ev1", 2)
    with pytest.raises(errors.IdempotencyConflict):
        order.require_same_request("ev1", 3)
    with pytest.raises(errors.IdempotencyConflict):
        order.require_same_request("ev2", 2)
    assert order.amount == 200


def test_backoff_grows_exponentially_up_to_its_cap_with_full_jitter():
    backoff = Backoff(base_s=0.01, cap_s=0.1)
    assert [backoff.bound(n) for n in (1, 2, 3, 4, 5)] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.1])
    rng = random.Random(0)
    delays = [backoff.delay(3, rng) for _ in range(200)]
    assert all(0 <= d <= 0.04 for d in delays) and max(delays) > 0.03 and min(delays) < 0.01


def test_starts_at_in_the_past_is_allowed_for_imports_but_must_have_a_zone():
    make_event(starts_at=START - timedelta(days=3650))
