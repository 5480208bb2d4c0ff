"""The pure rules of ticket types and the pools (quotas) they draw from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from boxoffice.domain import errors
from boxoffice.domain.ticket_types import (
    DEFAULT_POOL_ID,
    DEFAULT_TYPE_ID,
    Catalogue,
    Pool,
    TypeSpec,
    cap_quota_id,
    default_catalogue,
    new_catalogue,
)

NOW = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)


def spec(type_id: str, **overrides: object) -> TypeSpec:
    fields: dict[str, object] = dict(id=type_id, name=type_id.title(), price=1000, currency="EUR",
                                     per_order_max=4)
    fields.update(overrides)
    return TypeSpec(**fields)  # type: ignore[arg-type]


def festival() -> Catalogue:
    """Floor of 1,000 shared by early bird (at most 200) and standard; VIP with 50 of its own."""
    return new_catalogue(
        [spec("early", price=1500, pool="floor", capacity=200),
         spec("standard", price=2500, pool="floor"),
         spec("vip", price=9000, capacity=50, per_order_max=2, per_user_limit=2)],
        [Pool("floor", 1000)],
        order_max=6,
    )


def test_types_with_their_own_capacity_get_a_pool_each_and_shared_pools_add_up():
    cat = festival()
    assert {p.id: p.capacity for p in cat.pools} == {"floor": 1000, "vip": 50}
    assert cat.capacity == 1050
    assert cat.type("early").quota_ids == ("floor", cap_quota_id("early"))
    assert cat.type("standard").quota_ids == ("floor", cap_quota_id("standard"))
    assert cat.type("vip").quota_ids == ("vip",) and cat.type("vip").counter == "vip"
    assert cat.quota_capacities() == {"floor": 1000, "vip": 50, cap_quota_id("early"): 200,
                                      cap_quota_id("standard"): 1000}


def test_the_default_type_keeps_a_single_type_event_as_it_was():
    cat = default_catalogue(price=2500, currency="EUR", capacity=300, per_order_max=4, per_user_limit=6)
    assert cat.is_default and cat.capacity == 300
    (line,) = cat.lines_for({DEFAULT_TYPE_ID: 3}, NOW, order_max=4)
    assert (line.unit_price, line.amount, line.currency) == (2500, 7500, "EUR")
    assert cat.quota_capacities() == {DEFAULT_POOL_ID: 300}


def test_an_order_may_mix_types_and_each_line_records_its_price():
    lines = festival().lines_for({"vip": 1, "early": 2}, NOW, order_max=6)
    assert [(ln.type_id, ln.quantity, ln.unit_price, ln.amount) for ln in lines] == [
        ("early", 2, 1500, 3000), ("vip", 1, 9000, 9000)]


def test_a_request_naming_an_unknown_type_is_refused_with_its_name():
    with pytest.raises(errors.UnknownTicketType, match="balcony") as caught:
        festival().lines_for({"balcony": 1, "vip": 1}, NOW, order_max=6)
    assert caught.value.names == ["balcony"]


@pytest.mark.parametrize("request_", [{}, {"vip": 3}, {"vip": 0}, {"early": 4, "standard": 4}, {"vip": True}])
def test_quantities_outside_the_type_and_order_limits_are_refused(request_: dict[str, int]):
    with pytest.raises(errors.InvalidQuantity):
        festival().lines_for(request_, NOW, order_max=6)


def test_per_user_limits_count_per_type():
    cat = festival()
    lines = cat.lines_for({"vip": 1, "standard": 4}, NOW, order_max=6)
    cat.check_user_limits({"standard": 0, "vip": 1}, lines)
    with pytest.raises(errors.PerUserLimitExceeded, match="'vip'"):
        cat.check_user_limits({"vip": 2}, lines)


def test_a_type_sells_only_inside_its_sale_window():
    cat = new_catalogue([spec("early", capacity=10, opens_at=NOW, closes_at=NOW + timedelta(days=1))],
                        order_max=4)
    cat.lines_for({"early": 1}, NOW, order_max=4)
    with pytest.raises(errors.TicketTypeNotOnSale, match="opens"):
        cat.lines_for({"early": 1}, NOW - timedelta(seconds=1), order_max=4)
    with pytest.raises(errors.TicketTypeNotOnSale, match="closed"):
        cat.lines_for({"early": 1}, NOW + timedelta(days=1), order_max=4)


def test_taking_counts_every_quota_and_a_capped_type_sells_out_before_its_pool():
    cat = festival()
    left = cat.quota_capacities()
    left = cat.take(left, cat.lines_for({"early": 4}, NOW, order_max=6), "ev")
    assert left["floor"] == 996 and left[cap_quota_id("early")] == 196
    left[cap_quota_id("early")] = 1
    with pytest.raises(errors.TicketTypeSoldOut) as caught:
        cat.take(left, cat.lines_for({"early": 2}, NOW, order_max=6), "ev")
    assert (caught.value.type_id, caught.value.available) == ("early", 1)
    assert cat.available_by_type(left) == {"early": 1, "standard": 996, "vip": 50}


def test_lines_of_one_order_sharing_a_pool_are_counted_together_and_all_or_nothing():
    cat = festival()
    left = {**cat.quota_capacities(), "floor": 3}
    lines = cat.lines_for({"early": 2, "standard": 2}, NOW, order_max=6)
    with pytest.raises(errors.TicketTypeSoldOut) as caught:
        cat.take(left, lines, "ev")
    assert caught.value.type_id == "standard" and caught.value.available == 1
    assert left["floor"] == 3  # the input is not changed


@pytest.mark.parametrize(
    "types,pools,error,fragment",
    [
        ([spec("a", capacity=5), spec("a", capacity=5)], [], errors.InvalidTicketTypes, "appear twice"),
        ([spec("A b", capacity=5)], [], errors.InvalidTicketTypes, "lower-case"),
        ([], [], errors.InvalidTicketTypes, "1 to 20"),
        ([spec("a", pool="nope")], [], errors.UnknownTicketType, "unknown pool: nope"),
        ([spec("a", capacity=5, currency="USD"), spec("b", capacity=5)], [], errors.InvalidTicketTypes,
         "one currency"),
        ([spec("a", capacity=5, price=-1)], [], errors.InvalidTicketTypes, "price"),
        ([spec("a", capacity=5, per_order_max=9)], [], errors.InvalidTicketTypes, "per_order_max"),
        ([spec("a", capacity=5, per_user_limit=2)], [], errors.InvalidTicketTypes, "per_user_limit"),
        ([spec("a")], [], errors.OvercommittedPool, "needs a capacity"),
        ([spec("a", pool="p", capacity=11)], [Pool("p", 10)], errors.OvercommittedPool, "capped at 11"),
        ([spec("p", capacity=5), spec("b", pool="p")], [Pool("p", 10)], errors.OvercommittedPool,
         "a shared pool has that id"),
        ([spec("a", capacity=5)], [Pool("p", 10)], errors.OvercommittedPool, "no ticket type"),
        ([spec("a", pool="p")], [Pool("p", 0)], errors.OvercommittedPool, "at least 1"),
        ([spec("a", capacity=5, opens_at=NOW, closes_at=NOW)], [], errors.InvalidSaleWindow, "closes"),
        ([spec("a", capacity=5, opens_at=datetime(2027, 1, 1))], [], errors.InvalidSaleWindow, "time zone"),
    ],
)
def test_contradicting_types_and_pools_are_refused_with_a_named_error(
    types: list[TypeSpec], pools: list[Pool], error: type[Exception], fragment: str
):
    with pytest.raises(error, match=fragment):
        new_catalogue(types, pools, order_max=4)


def test_a_seated_type_is_sized_by_its_seats():
    cat = new_catalogue([spec("stalls"), spec("standing", capacity=100)], seat_counts={"stalls": 120},
                        order_max=4)
    assert cat.type("stalls").seated and not cat.type("standing").seated
    assert {p.id: p.capacity for p in cat.pools} == {"stalls": 120, "standing": 100}


@pytest.mark.parametrize(
    "types,pools,seats,error,fragment",
    [
        ([spec("stalls", capacity=100)], [], {"stalls": 120}, errors.OvercommittedPool, "120 seats"),
        ([spec("stalls", pool="p")], [Pool("p", 10)], {"stalls": 10}, errors.OvercommittedPool,
         "pool of its own"),
        ([spec("stalls", capacity=5)], [], {"box": 4}, errors.UnknownTicketType, "seat map: box"),
    ],
)
def test_seated_types_must_agree_with_the_seat_map(
    types: list[TypeSpec], pools: list[Pool], seats: dict[str, int], error: type[Exception], fragment: str
):
    with pytest.raises(error, match=fragment):
        new_catalogue(types, pools, seat_counts=seats, order_max=4)


def test_a_release_grows_a_types_own_pool_or_its_shared_pool_with_the_caps_sized_by_it():
    cat = festival()
    after, growth = cat.released("vip", 10)
    assert growth == {"vip": 10} and after.quota_capacities()["vip"] == 60
    assert after.capacity == cat.capacity + 10
    after, growth = cat.released("early", 100)  # early's cap grows; standard was sized by the pool: it grows too
    assert growth == {"floor": 100, cap_quota_id("early"): 100, cap_quota_id("standard"): 100}
    caps = after.quota_capacities()
    assert (caps["floor"], caps[cap_quota_id("early")], caps[cap_quota_id("standard")]) == (1100, 300, 1100)
    after, growth = cat.released("standard", 5)  # the early bird keeps its cap
    assert growth == {"floor": 5, cap_quota_id("standard"): 5}
    assert after.quota_capacities()[cap_quota_id("early")] == 200
    with pytest.raises(errors.UnknownTicketType):
        cat.released("boxes", 1)


def test_a_seated_type_is_not_released():
    cat = new_catalogue([spec("stalls")], seat_counts={"stalls": 20}, order_max=6)
    with pytest.raises(errors.InvalidRequest, match="seated"):
        cat.released("stalls", 5)
