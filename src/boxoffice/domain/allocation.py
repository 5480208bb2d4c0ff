"""The allocator's decision: many ticket requests of one event, in arrival order, in memory. Pure.

The batch allocator (``services.allocator``) reads an event's stock and its buyers' records,
calls ``allocate`` with the requests it pulled from the admission queue, and commits what this
returns in one atomic batch. Everything that decides who gets tickets lives here, so it can be
tested without a database and extended (ticket types, seats) without touching I/O:

- **arrival order**: requests are decided strictly in the order given (the queue's arrival
  order); a request is never passed over for a later one that asks for as many tickets or more;
- **stock by pool**: ``Stock`` maps a pool id to the available count of each of its shards.
  Today every event has one pool, ``DEFAULT_POOL``; ticket types with their own pools (and
  reserved seats, as pools of one) add pools without changing the decision's shape;
- **the rules of a sale**: sale status, per-order quantity, per-user limit (tickets bought plus
  held, counting what earlier requests of the same batch were granted), sold out and not
  enough tickets, duplicate requests in one batch.

Which shard serves a grant follows ``Stock.order`` (the allocator passes its shards least
recently written first), so consecutive batches spread their writes over the shard documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import NamedTuple

from boxoffice.domain.errors import BoxofficeError, IdempotencyConflict, InvalidRequest, NotEnoughTickets, SoldOut
from boxoffice.domain.model import Event
from boxoffice.domain.seating import Seat, SeatBook
from boxoffice.domain.ticket_types import DEFAULT_TYPE_ID, OrderLine

DEFAULT_POOL = "default"


class RequestKind(StrEnum):
    PURCHASE = "purchase"  # tickets become sold: an order
    HOLD = "hold"  # tickets become held: a cart that expires


@dataclass(frozen=True)
class TicketRequest:
    """One buyer's request as the admission queue recorded it."""

    id: str  # the order id (purchase) or hold id (hold): derived from user + idempotency key
    kind: RequestKind
    event_id: str
    user_id: str
    quantity: int
    idempotency_key: str
    arrived_at: datetime | None = None  # server time the queue received it
    attempt: int = 1  # a retry of a refused key asks again with the next attempt number
    pool: str = DEFAULT_POOL
    hold_ttl_s: float | None = None  # holds only: overrides the event's hold time
    # By ticket type: (type id, quantity) lines, and specific seats (their types make the lines).
    # Neither: ``quantity`` tickets of the event's one default type.
    lines: tuple[tuple[str, int], ...] = ()
    seats: tuple[str, ...] = ()
    instance: str = ""  # the app instance waiting for the answer
    message_id: str = ""  # the queue's id of this delivery


@dataclass(frozen=True)
class Stock:
    """Available tickets of one event: pool id -> shard id -> available.

    ``order`` lists shard ids in the order grants should use them (any shard not listed comes
    after, by id). Only the allocator takes from ``available``, so the stock it reads is exact
    or, when tickets came back meanwhile, a lower bound: a grant can never overdraw a shard.
    """

    pools: Mapping[str, Mapping[str, int]]
    order: Sequence[str] = ()

    def available(self, pool: str = DEFAULT_POOL) -> int:
        return sum(self.pools.get(pool, {}).values())

    @property
    def total(self) -> int:
        return sum(self.available(p) for p in self.pools)


@dataclass(frozen=True)
class Grant:
    request: TicketRequest
    allocations: Mapping[str, int]  # shard id -> tickets taken
    # Events with ticket types: the priced lines, each with the seats it got (seated types).
    lines: tuple[OrderLine, ...] = ()


@dataclass(frozen=True)
class Refusal:
    request: TicketRequest
    error: BoxofficeError


Decision = Grant | Refusal


@dataclass(frozen=True)
class Allocation:
    """What ``allocate`` decided: one decision per distinct request, in arrival order."""

    decisions: list[Decision]
    stock: Stock  # what is left
    counted: Mapping[str, int]  # per user: tickets bought + held after the batch
    duplicates: list[TicketRequest] = field(default_factory=list)  # same id and attempt again

    @property
    def grants(self) -> list[Grant]:
        return [d for d in self.decisions if isinstance(d, Grant)]

    @property
    def taken(self) -> dict[str, int]:
        """Tickets taken from each shard by the whole batch."""
        out: dict[str, int] = {}
        for grant in self.grants:
            for shard, n in grant.allocations.items():
                out[shard] = out.get(shard, 0) + n
        return out


def allocate(
    event: Event,
    stock: Stock,
    requests: Sequence[TicketRequest],
    counted: Mapping[str, int],
    *,
    counted_types: Mapping[str, Mapping[str, int]] | None = None,
    seats: SeatBook | None = None,
    now: datetime | None = None,
) -> Allocation:
    """Decide ``requests`` (in arrival order) against ``stock``.

    ``counted``: per user, tickets bought (not cancelled) plus held before this batch, for the
    per-user limit (a user missing from it has none). A request whose id appears twice with the
    same attempt is decided once; the repeats are returned as ``duplicates`` (they get the first
    one's answer). The same id with other parameters is refused as ``IdempotencyConflict``.

    An event with ticket types (or a request naming types or seats) is decided by type: the
    stock's pools are the catalogue's quotas, ``counted_types`` gives each user's tickets per
    type, ``seats`` (the event's seat book, changed in place: give a copy if the batch may not
    commit) chooses seats for seated types in arrival order, and a type's sale window is judged
    at the request's arrival (``now`` if it has none).
    """
    pools = {p: dict(shards) for p, shards in stock.pools.items()}
    rank = {sid: i for i, sid in enumerate(stock.order)}
    users = dict(counted)
    by_type = {u: dict(c) for u, c in (counted_types or {}).items()}
    moment = now or datetime.now(UTC)
    decisions: list[Decision] = []
    duplicates: list[TicketRequest] = []
    seen: dict[str, TicketRequest] = {}
    for request in requests:
        first = seen.get(request.id)
        if first is not None:
            if _same(first, request):
                duplicates.append(request)
            else:
                decisions.append(Refusal(request, _conflict(first, request)))
            continue
        seen[request.id] = request
        try:
            if event.catalogue is None and not request.lines and not request.seats:
                grant = Grant(request, _decide(event, pools, rank, users, request))
            else:
                grant = _decide_typed(event, pools, rank, users, by_type, request, seats,
                                      request.arrived_at or moment)
        except BoxofficeError as exc:
            decisions.append(Refusal(request, exc))
            continue
        users[request.user_id] = users.get(request.user_id, 0) + request.quantity
        for line in grant.lines:
            mine = by_type.setdefault(request.user_id, {})
            mine[line.type_id] = mine.get(line.type_id, 0) + line.quantity
        decisions.append(grant)
    return Allocation(decisions, Stock(pools, stock.order), users, duplicates)


def _decide(
    event: Event,
    pools: dict[str, dict[str, int]],
    rank: Mapping[str, int],
    users: Mapping[str, int],
    request: TicketRequest,
) -> dict[str, int]:
    event.require_on_sale()
    event.validate_quantity(request.quantity)
    event.check_user_limit(users.get(request.user_id, 0), request.quantity)
    shards = pools.get(request.pool, {})
    left = sum(shards.values())
    if left == 0:
        raise SoldOut(event.id)
    if left < request.quantity:
        raise NotEnoughTickets(event.id, request.quantity, left)
    plan: dict[str, int] = {}
    _take_from_shards(shards, rank, request.quantity, plan)
    return plan


def _take_from_shards(shards: dict[str, int], rank: Mapping[str, int], quantity: int, plan: dict[str, int]) -> None:
    wanted = quantity
    for sid in sorted(shards, key=lambda s: (rank.get(s, len(rank)), s)):
        n = min(shards[sid], wanted)
        if n:
            plan[sid] = plan.get(sid, 0) + n
            shards[sid] -= n
            wanted -= n
        if not wanted:
            break


def _decide_typed(
    event: Event,
    pools: dict[str, dict[str, int]],
    rank: Mapping[str, int],
    users: Mapping[str, int],
    by_type: Mapping[str, Mapping[str, int]],
    request: TicketRequest,
    book: SeatBook | None,
    now: datetime,
) -> Grant:
    """One request by ticket type: every quota of every line, and seats, or nothing at all."""
    event.require_on_sale()
    catalogue = event.ticket_types
    named: tuple[Seat, ...] = ()
    if request.seats:
        if book is None:
            raise InvalidRequest(f"event {event.id!r} has no seat map: ask for ticket types and quantities")
        named = book.check_specific(request.seats)
        wanted: dict[str, int] = {}
        for seat in named:
            wanted[seat.type_id] = wanted.get(seat.type_id, 0) + 1
        if request.lines and dict(request.lines) != wanted:
            raise InvalidRequest(f"the seats named are {wanted} by type, the request asks for {dict(request.lines)}")
    else:
        wanted = dict(request.lines) if request.lines else {DEFAULT_TYPE_ID: request.quantity}
    lines = catalogue.lines_for(wanted, now, event.per_order_max)
    total = sum(line.quantity for line in lines)
    if total != request.quantity:
        raise InvalidRequest(f"the lines add up to {total} tickets, the request says {request.quantity}")
    event.check_user_limit(users.get(request.user_id, 0), total)
    catalogue.check_user_limits(by_type.get(request.user_id, {}), lines)
    catalogue.take({q: sum(shards.values()) for q, shards in pools.items()}, lines, event.id)
    priced: list[OrderLine] = []
    taken: list[str] = []
    try:
        for line in lines:
            if not catalogue.type(line.type_id).seated:
                priced.append(line)
                continue
            if book is None:
                raise InvalidRequest(f"ticket type {line.type_id!r} is seated but the event has no seat map")
            if named:
                ids = tuple(s.id for s in named if s.type_id == line.type_id)
                book.take_specific(ids)
            else:
                ids = book.take_best(line.type_id, line.quantity, event.id).seat_ids
            taken.extend(ids)
            priced.append(replace(line, seat_ids=ids))
    except BoxofficeError:
        if book is not None:
            book.release(taken)
        raise
    plan: dict[str, int] = {}
    for line in lines:
        for quota in catalogue.type(line.type_id).quota_ids:
            _take_from_shards(pools.setdefault(quota, {}), rank, line.quantity, plan)
    return Grant(request, plan, tuple(priced))


def _same(a: TicketRequest, b: TicketRequest) -> bool:
    return (a.kind, a.event_id, a.user_id, a.quantity, a.pool, a.lines, a.seats) == (
        b.kind, b.event_id, b.user_id, b.quantity, b.pool, b.lines, b.seats)


def _conflict(first: TicketRequest, other: TicketRequest) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"idempotency key {other.idempotency_key!r} was already used for {first.quantity} tickets of event "
        f"{first.event_id} ({first.kind.value}); use a new key for a new request"
    )


class Answered(NamedTuple):
    """What one buyer was told, for the fairness audit."""

    arrived_at: float  # server arrival time (seconds)
    quantity: int
    granted: bool
    starved: bool  # refused for lack of stock (sold out, or not enough left)
    none_left: bool = False  # told that no ticket at all was left


def fifo_violations(answers: Sequence[Answered]) -> int:
    """Buyers refused for lack of stock although a later arrival got tickets it should not have.

    For a sale in which no tickets came back, a refusal for lack of stock is a violation when a
    strictly *later* arrival asking for at least as many tickets got some (it could have served
    the earlier buyer), or, when the earlier buyer was told none were left at all, when any
    later arrival got tickets. Arrivals at the same instant are not ordered. Counted once per
    refused buyer.
    """
    ordered = sorted(answers, key=lambda a: a.arrived_at)
    violations = 0
    best_later = 0  # the largest quantity granted to an arrival strictly after the current time
    i = len(ordered)
    while i > 0:
        j = i
        while j > 0 and ordered[j - 1].arrived_at == ordered[i - 1].arrived_at:
            j -= 1
        group = ordered[j:i]
        for a in group:
            if a.starved and best_later and (a.none_left or best_later >= a.quantity):
                violations += 1
        best_later = max([best_later, *(a.quantity for a in group if a.granted)])
        i = j
    return violations
