"""Ticket types and the pools (quotas) they draw from. Pure Python, no I/O.

An event sells one or more ticket types (standing, seated, VIP, early bird), each with its own
price, limits and sale window. Every ticket of a type counts against each of the type's
*quotas* (pretix's word): the pool the type draws from and, when the type is capped inside a
pool it shares with other types, its own cap. A type is available while all its quotas are.

Pools partition the event: each ticket counts in exactly one pool, so the pools' capacities add
up to the event's capacity and no two pools overlap. A type either has a pool of its own (sized
by its ``capacity``, or by its seats on the seat map) or draws from a declared shared pool, where
its ``capacity`` is a cap on its share (early bird: at most 200 of the 1,000 floor tickets).

An event created without types has exactly one, ``DEFAULT_TYPE_ID``, drawing from
``DEFAULT_POOL_ID`` with the event's price, currency and limits, so existing single-type events
behave exactly as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from boxoffice.domain.errors import (
    InvalidQuantity,
    InvalidRequest,
    InvalidSaleWindow,
    InvalidTicketTypes,
    OvercommittedPool,
    PerUserTypeLimitExceeded,
    TicketTypeNotOnSale,
    TicketTypeSoldOut,
    UnknownTicketType,
)

DEFAULT_TYPE_ID = "general"
DEFAULT_POOL_ID = "default"
MAX_TYPES = 20
# Ids become parts of Firestore document ids and field paths: lower-case letters, digits, '_', '-'.
TYPE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# A cap's quota id cannot collide with a pool id: ':' is not allowed in those.
_CAP_PREFIX = "cap:"


def cap_quota_id(type_id: str) -> str:
    return _CAP_PREFIX + type_id


@dataclass(frozen=True)
class Pool:
    """Interchangeable tickets that one or more types sell from."""

    id: str
    capacity: int


@dataclass(frozen=True)
class TypeSpec:
    """A ticket type as an organiser declares it, before it is checked against the others."""

    id: str
    name: str
    price: int
    currency: str
    per_order_max: int
    per_user_limit: int | None = None
    pool: str | None = None  # a declared shared pool; None: a pool of its own
    capacity: int | None = None  # own pool: its size; shared pool: the type's cap
    opens_at: datetime | None = None
    closes_at: datetime | None = None


@dataclass(frozen=True)
class TicketType:
    id: str
    name: str
    price: int  # minor units
    currency: str
    pool_id: str
    per_order_max: int
    per_user_limit: int
    cap: int | None = None  # shared pool only: at most this many of this type (default: the pool)
    opens_at: datetime | None = None
    closes_at: datetime | None = None
    seated: bool = False

    @property
    def counter(self) -> str:
        """The quota that counts this type alone: its own pool, or its cap in a shared pool."""
        return self.pool_id if self.cap is None else cap_quota_id(self.id)

    @property
    def quota_ids(self) -> tuple[str, ...]:
        """The counters one ticket of this type takes one from."""
        return (self.pool_id,) if self.cap is None else (self.pool_id, cap_quota_id(self.id))

    def require_on_sale(self, now: datetime) -> None:
        if self.opens_at is not None and now < self.opens_at:
            raise TicketTypeNotOnSale(self.id, f"its sale opens at {self.opens_at.isoformat()}")
        if self.closes_at is not None and now >= self.closes_at:
            raise TicketTypeNotOnSale(self.id, f"its sale closed at {self.closes_at.isoformat()}")


@dataclass(frozen=True)
class OrderLine:
    """One type in an order, at the price it was sold for (prices may change later)."""

    type_id: str
    quantity: int
    unit_price: int
    currency: str
    seat_ids: tuple[str, ...] = ()

    @property
    def amount(self) -> int:
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class Catalogue:
    """The ticket types of one event and the pools they draw from (validated)."""

    types: tuple[TicketType, ...]
    pools: tuple[Pool, ...]

    def type(self, type_id: str) -> TicketType:
        for t in self.types:
            if t.id == type_id:
                return t
        raise UnknownTicketType([type_id])

    @property
    def capacity(self) -> int:
        return sum(p.capacity for p in self.pools)

    @property
    def currency(self) -> str:
        return self.types[0].currency

    @property
    def is_default(self) -> bool:
        return [t.id for t in self.types] == [DEFAULT_TYPE_ID]

    def quota_capacities(self) -> dict[str, int]:
        """Every counter the allocator keeps: pools, then the caps of types in shared pools."""
        out = {p.id: p.capacity for p in self.pools}
        out.update({cap_quota_id(t.id): t.cap for t in self.types if t.cap is not None})
        return out

    def released(self, type_id: str, quantity: int) -> tuple[Catalogue, dict[str, int]]:
        """The catalogue after ``quantity`` more tickets of ``type_id`` go on sale, and what each
        quota grows by.

        A type with a pool of its own grows its pool. A type in a shared pool grows the pool and
        its own cap; the other types of that pool that were sized by the pool (their cap is the
        pool's size) grow with it, and capped ones keep their cap. Raises ``UnknownTicketType``,
        ``InvalidRequest`` for a seated type (its capacity is its seats: a seat map changes).
        """
        t = self.type(type_id)
        if t.seated:
            raise InvalidRequest(f"ticket type {type_id!r} is seated: its capacity is its seats on the map, "
                                 "which a release does not change")
        pool = next(p for p in self.pools if p.id == t.pool_id)
        growth = {pool.id: quantity}
        types = []
        for other in self.types:
            if other.cap is not None and other.pool_id == pool.id and (other.id == t.id or other.cap == pool.capacity):
                growth[cap_quota_id(other.id)] = quantity
                other = replace(other, cap=other.cap + quantity)
            types.append(other)
        pools = tuple(replace(p, capacity=p.capacity + quantity) if p.id == pool.id else p for p in self.pools)
        return Catalogue(tuple(types), pools), growth

    def lines_for(self, request: Mapping[str, int], now: datetime, order_max: int) -> tuple[OrderLine, ...]:
        """Price a request {type id: quantity}; lines in catalogue order.

        Raises ``UnknownTicketType``, ``InvalidQuantity`` (per type, or ``order_max`` in all) and
        ``TicketTypeNotOnSale``.
        """
        if not request:
            raise InvalidQuantity("name at least one ticket type and quantity")
        unknown = sorted(set(request) - {t.id for t in self.types})
        if unknown:
            raise UnknownTicketType(unknown)
        lines = []
        for t in self.types:
            if t.id not in request:
                continue
            quantity = request[t.id]
            if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= t.per_order_max:
                raise InvalidQuantity(
                    f"quantity of {t.id!r} must be between 1 and {t.per_order_max}, got {quantity!r}")
            t.require_on_sale(now)
            lines.append(OrderLine(t.id, quantity, t.price, t.currency))
        total = sum(line.quantity for line in lines)
        if total > order_max:
            raise InvalidQuantity(f"at most {order_max} tickets per order, asked for {total}")
        return tuple(lines)

    def check_user_limits(self, already: Mapping[str, int], lines: Sequence[OrderLine]) -> None:
        """Per-type limits of one buyer; ``already`` counts their tickets (bought and held) by type."""
        for line in lines:
            t = self.type(line.type_id)
            have = already.get(t.id, 0)
            if have + line.quantity > t.per_user_limit:
                raise PerUserTypeLimitExceeded(t.per_user_limit, have, line.quantity, t.id)

    def demand(self, lines: Sequence[OrderLine]) -> dict[str, int]:
        """What ``lines`` take from each quota."""
        out: dict[str, int] = {}
        for line in lines:
            for q in self.type(line.type_id).quota_ids:
                out[q] = out.get(q, 0) + line.quantity
        return out

    def available_by_type(self, available: Mapping[str, int]) -> dict[str, int]:
        """Tickets of each type that could be sold now, given what is left of every quota."""
        return {t.id: min(available.get(q, 0) for q in t.quota_ids) for t in self.types}

    def take(self, available: Mapping[str, int], lines: Sequence[OrderLine], event_id: str) -> dict[str, int]:
        """What is left of every quota after selling ``lines``, all of them or none.

        Raises ``TicketTypeSoldOut`` naming the first line that cannot be served, with what is
        left of its type (lines of one order that share a pool are counted together).
        """
        left = dict(available)
        for line in lines:
            t = self.type(line.type_id)
            can = min(left.get(q, 0) for q in t.quota_ids)
            if can < line.quantity:
                raise TicketTypeSoldOut(event_id, t.id, line.quantity, can)
            for q in t.quota_ids:
                left[q] -= line.quantity
        return left


def default_catalogue(price: int, currency: str, capacity: int, per_order_max: int,
                      per_user_limit: int) -> Catalogue:
    """The one type of an event created without types: the event's own price and limits."""
    return Catalogue(
        types=(TicketType(id=DEFAULT_TYPE_ID, name="General admission", price=price, currency=currency,
                          pool_id=DEFAULT_POOL_ID, per_order_max=per_order_max,
                          per_user_limit=per_user_limit),),
        pools=(Pool(DEFAULT_POOL_ID, capacity),),
    )


def new_catalogue(
    types: Sequence[TypeSpec],
    pools: Sequence[Pool] = (),
    *,
    seat_counts: Mapping[str, int] | None = None,
    order_max: int,
) -> Catalogue:
    """Check an organiser's types and pools against each other and build the catalogue.

    ``seat_counts`` are the seats (not blocked) the seat map gives each type: a seated type gets
    a pool of its own of exactly that size. ``order_max`` is the event's per-order maximum.
    Raises ``UnknownTicketType`` (a pool or seat names no known type or pool),
    ``OvercommittedPool`` (pools overlap, a cap exceeds its pool, a size disagrees with the
    seats), ``InvalidSaleWindow``, or ``InvalidTicketTypes`` for anything else.
    """
    seats = dict(seat_counts or {})
    _check_ids(types, pools)
    unknown_seat_types = sorted(set(seats) - {t.id for t in types})
    if unknown_seat_types:
        raise UnknownTicketType(unknown_seat_types, "ticket type on the seat map")
    pool_by_id = {p.id: p for p in pools}
    unknown_pools = sorted({t.pool for t in types if t.pool is not None and t.pool not in pool_by_id})
    if unknown_pools:
        raise UnknownTicketType(unknown_pools, "pool")
    _check_windows(types)
    _check_fields(types, order_max)

    overlap: list[str] = []
    own_pools: list[Pool] = []
    built: list[TicketType] = []
    for spec in types:
        seated = spec.id in seats
        if spec.pool is None:
            size = seats[spec.id] if seated else spec.capacity
            if seated and spec.capacity is not None and spec.capacity != seats[spec.id]:
                overlap.append(f"type {spec.id!r} has capacity {spec.capacity} but "
                               f"{seats[spec.id]} seats on the seat map")
            if size is None or size < 1:
                overlap.append(f"type {spec.id!r} needs a capacity of at least 1 (or seats), "
                               f"or a shared pool")
                continue
            if spec.id in pool_by_id:
                overlap.append(f"type {spec.id!r} would have a pool of its own, "
                               f"but a shared pool has that id")
            own_pools.append(Pool(spec.id, size))
            pool_id, cap = spec.id, None
        else:
            if seated:
                overlap.append(f"seated type {spec.id!r} must have a pool of its own (its seats), "
                               f"not share pool {spec.pool!r}")
            pool = pool_by_id[spec.pool]
            # Every type of a shared pool has a counter of its own, so sales per type are exact;
            # without a cap of its own it is the pool's size and never the one that runs out.
            cap = spec.capacity if spec.capacity is not None else pool.capacity
            if not 1 <= cap <= pool.capacity:
                overlap.append(f"type {spec.id!r} is capped at {cap}, "
                               f"outside 1..{pool.capacity} of pool {pool.id!r}")
            pool_id = pool.id
        built.append(TicketType(
            id=spec.id, name=spec.name.strip(), price=spec.price, currency=spec.currency,
            pool_id=pool_id, per_order_max=spec.per_order_max,
            per_user_limit=spec.per_user_limit if spec.per_user_limit is not None else spec.per_order_max,
            cap=cap, opens_at=spec.opens_at, closes_at=spec.closes_at, seated=seated,
        ))
    for pool in pools:
        if pool.capacity < 1:
            overlap.append(f"pool {pool.id!r} needs a capacity of at least 1")
        if not any(t.pool == pool.id for t in types):
            overlap.append(f"pool {pool.id!r} has no ticket type drawing from it")
    if overlap:
        raise OvercommittedPool("invalid pools: " + "; ".join(overlap))
    return Catalogue(types=tuple(built), pools=tuple(pools) + tuple(own_pools))


def _check_ids(types: Sequence[TypeSpec], pools: Sequence[Pool]) -> None:
    problems: list[str] = []
    if not 1 <= len(types) <= MAX_TYPES:
        problems.append(f"an event has 1 to {MAX_TYPES} ticket types, got {len(types)}")
    for kind, ids in (("ticket type", [t.id for t in types]), ("pool", [p.id for p in pools])):
        bad = [i for i in ids if not TYPE_ID.match(i)]
        if bad:
            problems.append(f"{kind} ids must be 1-40 lower-case letters, digits, '_' or '-': {bad}")
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            problems.append(f"{kind} ids appear twice: {dupes}")
    if problems:
        raise InvalidTicketTypes("invalid ticket types: " + "; ".join(problems))


def _check_windows(types: Sequence[TypeSpec]) -> None:
    problems: list[str] = []
    for t in types:
        for name, moment in (("opens_at", t.opens_at), ("closes_at", t.closes_at)):
            if moment is not None and moment.tzinfo is None:
                problems.append(f"{name} of {t.id!r} must carry a time zone")
        if (t.opens_at is not None and t.closes_at is not None and t.opens_at.tzinfo is not None
                and t.closes_at.tzinfo is not None and t.closes_at <= t.opens_at):
            problems.append(f"the sale of {t.id!r} closes ({t.closes_at.isoformat()}) "
                            f"before it opens ({t.opens_at.isoformat()})")
    if problems:
        raise InvalidSaleWindow("invalid sale windows: " + "; ".join(problems))


def _check_fields(types: Sequence[TypeSpec], order_max: int) -> None:
    problems: list[str] = []
    for t in types:
        if not t.name.strip():
            problems.append(f"type {t.id!r} needs a name")
        if isinstance(t.price, bool) or not isinstance(t.price, int) or t.price < 0:
            problems.append(f"price of {t.id!r} must be a whole number of minor units, 0 or more")
        if not _CURRENCY.match(t.currency):
            problems.append(f"currency of {t.id!r} must be a three-letter ISO 4217 code")
        if not 1 <= t.per_order_max <= order_max:
            problems.append(f"per_order_max of {t.id!r} must be between 1 and the event's {order_max}")
        if t.per_user_limit is not None and t.per_user_limit < t.per_order_max:
            problems.append(f"per_user_limit of {t.id!r} must not be below its per_order_max")
    if len({t.currency for t in types}) > 1:
        problems.append("all ticket types of an event must share one currency "
                        "(an order's lines add up to one amount)")
    if problems:
        raise InvalidTicketTypes("invalid ticket types: " + "; ".join(problems))


_TYPE_FIELDS = {"id", "name", "price", "currency", "per_order_max", "per_user_limit", "pool", "capacity",
                "opens_at", "closes_at"}


def type_specs_from_json(data: object, *, currency: str, per_order_max: int) -> tuple[list[TypeSpec], list[Pool]]:
    """Types and shared pools from their JSON form (the CLI's ``--types`` file, the API body)::

        {"types": [{"id": "early", "name": "Early bird", "price": 1500, "pool": "floor",
                    "capacity": 200, "opens_at": "2027-01-01T10:00:00+00:00"},
                   {"id": "vip", "name": "VIP", "price": 9000, "capacity": 50, "per_order_max": 2}],
         "pools": [{"id": "floor", "capacity": 1000}]}

    ``currency`` and ``per_order_max`` are the event's, for types that leave them out. Only the
    shape is checked here; ``new_catalogue`` checks the types against each other.
    """
    problems: list[str] = []
    if not isinstance(data, Mapping) or set(data) - {"types", "pools"}:
        raise InvalidTicketTypes('ticket types must be an object {"types": [...], "pools": [...]}')
    raw_types, raw_pools = data.get("types"), data.get("pools", [])
    if not isinstance(raw_types, list) or not isinstance(raw_pools, list):
        raise InvalidTicketTypes('"types" (and "pools", if given) must be lists')
    specs: list[TypeSpec] = []
    for i, raw in enumerate(raw_types):
        if not isinstance(raw, Mapping) or set(raw) - _TYPE_FIELDS or not {"id", "name", "price"} <= set(raw):
            problems.append(f"type #{i + 1} must be an object with id, name, price and only the fields "
                            f"{sorted(_TYPE_FIELDS)}")
            continue
        try:
            specs.append(TypeSpec(
                id=_str(raw["id"]), name=_str(raw["name"]), price=_whole(raw["price"]),
                currency=_str(raw.get("currency", currency)),
                per_order_max=_whole(raw.get("per_order_max", per_order_max)),
                per_user_limit=_whole(raw["per_user_limit"]) if raw.get("per_user_limit") is not None else None,
                pool=_str(raw["pool"]) if raw.get("pool") is not None else None,
                capacity=_whole(raw["capacity"]) if raw.get("capacity") is not None else None,
                opens_at=_moment(raw.get("opens_at")), closes_at=_moment(raw.get("closes_at")),
            ))
        except ValueError as exc:
            problems.append(f"type #{i + 1}: {exc}")
    pools: list[Pool] = []
    for i, raw in enumerate(raw_pools):
        if not isinstance(raw, Mapping) or set(raw) != {"id", "capacity"}:
            problems.append(f"pool #{i + 1} must be an object with id and capacity")
            continue
        try:
            pools.append(Pool(_str(raw["id"]), _whole(raw["capacity"])))
        except ValueError as exc:
            problems.append(f"pool #{i + 1}: {exc}")
    if problems:
        raise InvalidTicketTypes("invalid ticket types: " + "; ".join(problems))
    return specs, pools


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {value!r}")
    return value


def _moment(value: object) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 time, got {value!r}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time, got {value!r}") from None
