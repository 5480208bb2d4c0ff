"""The ticketing domain: events, inventory shards, orders and tickets. Pure Python, no I/O.

Inventory of an event is split across shards so that concurrent buyers rarely touch the same
document. Every shard keeps ``available + held + sold == capacity``; nothing here lets a count
go below zero.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from boxoffice.domain.errors import (
    EventNotFound,
    EventNotOnSale,
    HoldExpired,
    HoldNotActive,
    IdempotencyConflict,
    InvalidQuantity,
    InvalidRequest,
    InvalidSaleTransition,
    NotEnoughTickets,
    NotEventOrganiser,
    PerUserLimitExceeded,
    SoldOut,
)
from boxoffice.domain.seating import SeatMap
from boxoffice.domain.ticket_types import (
    DEFAULT_POOL_ID,
    Catalogue,
    OrderLine,
    Pool,
    TypeSpec,
    default_catalogue,
    new_catalogue,
)

MAX_SHARDS = 200
TICKETS_PER_SHARD = 10
# A Firestore commit holds at most 500 writes; an order writes its tickets plus a handful more.
MAX_PER_ORDER = 50
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_KEY = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class SaleStatus(StrEnum):
    DRAFT = "draft"
    ON_SALE = "on_sale"
    PAUSED = "paused"
    CLOSED = "closed"


class OrderStatus(StrEnum):
    CONFIRMED = "confirmed"
    PARTIALLY_CANCELLED = "partially_cancelled"
    CANCELLED = "cancelled"


class TicketStatus(StrEnum):
    VALID = "valid"
    VOID = "void"


def default_shard_count(capacity: int) -> int:
    """About ten tickets a shard, at most ``MAX_SHARDS`` shards.

    Ten tickets a shard keeps a flash sale's buyers spread over many documents while the
    query for non-empty shards near the end of a sale stays small.
    """
    return max(1, min(MAX_SHARDS, math.ceil(capacity / TICKETS_PER_SHARD)))


def initial_shards(event: Event) -> list[InventoryShard]:
    """The inventory of a new event: ``shard_count`` shards, or for an event with types the
    shards of each quota (pools, and the counters of types in shared pools)."""
    if event.catalogue is None:
        return [InventoryShard(id=shard_id(i), capacity=c, available=c)
                for i, c in enumerate(split_capacity(event.capacity, event.shard_count))]
    quotas = event.catalogue.quota_capacities()
    return [InventoryShard(id=shard_id(i, quota), capacity=c, available=c, pool=quota)
            for quota, count in quota_shard_counts(event.catalogue).items()
            for i, c in enumerate(split_capacity(quotas[quota], count))]


def split_capacity(capacity: int, shard_count: int) -> list[int]:
    """Capacities of ``shard_count`` shards that add up to ``capacity``, as even as possible."""
    base, extra = divmod(capacity, shard_count)
    return [base + (1 if i < extra else 0) for i in range(shard_count)]


def shard_id(index: int, quota: str | None = None) -> str:
    """``s000`` for a single-type event; ``{quota}.s000`` for a quota of an event with types."""
    return f"s{index:03d}" if quota is None else f"{quota}.s{index:03d}"


def shard_quota(sid: str) -> str:
    """The quota a shard counts (the inverse of ``shard_id``): ``DEFAULT_POOL_ID`` for ``s000``."""
    return sid.rsplit(".", 1)[0] if "." in sid else DEFAULT_POOL_ID


def quota_shard_counts(catalogue: Catalogue) -> dict[str, int]:
    """Shards of each quota of an event with types: about ten tickets a shard, at most
    ``MAX_SHARDS`` in all (a catalogue has at most 40 quotas: 20 pools and 20 caps)."""
    quotas = catalogue.quota_capacities()
    each = MAX_SHARDS // len(quotas)
    return {q: max(1, min(default_shard_count(c), each, c)) for q, c in quotas.items()}


@dataclass(frozen=True)
class Event:
    id: str
    name: str
    venue: str
    starts_at: datetime
    price: int  # minor units (cents)
    currency: str
    capacity: int
    per_order_max: int
    per_user_limit: int
    shard_count: int
    status: SaleStatus = SaleStatus.ON_SALE
    hold_minutes: int = 10
    low_stock_threshold: int = 0
    created_at: datetime | None = None
    # The uid of the user who created the event; None for events made by operators (CLI).
    organiser_id: str | None = None
    # The event's ticket types; None for a single-type event (``ticket_types`` gives its default).
    catalogue: Catalogue | None = None
    seat_map: SeatMap | None = None

    @property
    def ticket_types(self) -> Catalogue:
        """The types the event sells: declared ones, or the one default type of a single-type event."""
        if self.catalogue is not None:
            return self.catalogue
        return default_catalogue(self.price, self.currency, self.capacity, self.per_order_max,
                                 self.per_user_limit)

    def visible_to(self, user_id: str | None) -> bool:
        """Who may know the event exists: anyone once published; only its organiser while it is a
        draft. The one policy of both doors (the API and ``firestore.rules``' ``events`` match)."""
        return self.status is not SaleStatus.DRAFT or (user_id is not None and user_id == self.organiser_id)

    def require_visible_to(self, user_id: str | None) -> None:
        """A draft is answered to anyone but its organiser exactly as a missing event is."""
        if not self.visible_to(user_id):
            raise EventNotFound(self.id)

    def require_organiser(self, user_id: str) -> None:
        """Only the organiser who created the event may change it (anyone else: not found, for
        a draft, else not its organiser)."""
        self.require_visible_to(user_id)
        if self.organiser_id is None or self.organiser_id != user_id:
            raise NotEventOrganiser(self.id)

    def require_on_sale(self) -> None:
        """Tickets are sold only on sale. A draft is nobody's to buy: it is not found (it has no
        buyers, so even its organiser is told so)."""
        if self.status is SaleStatus.DRAFT:
            raise EventNotFound(self.id)
        if self.status is not SaleStatus.ON_SALE:
            raise EventNotOnSale(self.id, self.status.value)

    def validate_quantity(self, quantity: int) -> None:
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            raise InvalidQuantity(f"quantity must be a whole number, got {quantity!r}")
        if not 1 <= quantity <= self.per_order_max:
            raise InvalidQuantity(
                f"quantity must be between 1 and {self.per_order_max} for this event, got {quantity}"
            )

    def check_user_limit(self, already: int, quantity: int) -> None:
        if already + quantity > self.per_user_limit:
            raise PerUserLimitExceeded(self.per_user_limit, already, quantity)


# Joiners that are part of writing, not tricks: ZWNJ (Persian, Indic scripts) and ZWJ (emoji
# sequences), allowed only between two visible characters.
_JOINERS = frozenset("\u200c\u200d")


def display_text_problem(text: object) -> str | None:
    """Why ``text`` cannot be shown as a name or venue, or None when it can.

    Refused: no visible character; control characters (NUL, CR, LF, tab, ...); line and paragraph
    separators; surrogates, unassigned and private-use code points; format characters (zero-width
    space, BOM, bidirectional overrides, ...) except a joiner between two visible characters.
    Such text breaks emails, logs, CSV exports and tickets, or hides what it says.
    """
    if not isinstance(text, str):
        return "must be text"
    if not text.strip():
        return "must not be empty"
    for i, ch in enumerate(text):
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs", "Co", "Cn", "Zl", "Zp"):
            return f"must not contain the character U+{ord(ch):04X}"
        if category == "Cf":
            before, after = text[i - 1:i], text[i + 1:i + 2]
            if not (ch in _JOINERS and _joinable(before) and _joinable(after)):
                return f"must not contain the invisible character U+{ord(ch):04X} there"
    if not any(_visible(ch) for ch in text):
        return "must contain a visible character"
    return None


def _visible(ch: str) -> bool:
    return bool(ch) and not ch.isspace() and unicodedata.category(ch)[0] not in ("C", "Z", "M")


def _joinable(ch: str) -> bool:
    """Either side of a joiner: a visible character or a mark (an emoji's variation selector)."""
    return bool(ch) and not ch.isspace() and unicodedata.category(ch)[0] not in ("C", "Z")


def new_event(
    *,
    event_id: str,
    name: str,
    venue: str,
    starts_at: datetime,
    price: int | None,
    currency: str,
    capacity: int | None,
    per_order_max: int = 10,
    per_user_limit: int | None = None,
    shard_count: int | None = None,
    status: SaleStatus = SaleStatus.ON_SALE,
    hold_minutes: int = 10,
    low_stock_threshold: int | None = None,
    now: datetime | None = None,
    organiser_id: str | None = None,
    types: Sequence[TypeSpec] | None = None,
    pools: Sequence[Pool] = (),
    seat_map: SeatMap | None = None,
) -> Event:
    """Validate an organiser's input and build the event. Raises ``InvalidRequest``.

    With ``types`` (and optionally shared ``pools`` and a ``seat_map``), the event sells those
    types: its capacity is the pools' total (a ``capacity`` given must agree), its price the
    cheapest type's (for listings), its currency theirs. Without, it sells one default type at
    ``price``. Type and seat errors are raised before the event's own (their names say which).
    """
    catalogue = None
    if seat_map is not None and types is None:
        raise InvalidRequest("a seat map needs ticket types: every seat is sold as one of them")
    if types is not None:
        catalogue = new_catalogue(types, pools, order_max=per_order_max,
                                  seat_counts=seat_map.seat_counts() if seat_map is not None else None)
        if capacity not in (None, 0, catalogue.capacity):
            raise InvalidRequest(f"invalid event: capacity {capacity} disagrees with the ticket types' "
                                 f"pools, which hold {catalogue.capacity}; leave it out")
        capacity = catalogue.capacity
        price = min(t.price for t in catalogue.types)
        currency = catalogue.currency
        if per_user_limit is None:
            per_user_limit = max(per_order_max, max(t.per_user_limit for t in catalogue.types))
        shard_count = sum(quota_shard_counts(catalogue).values())
    problems: list[str] = []
    for what, text in (("name", name), ("venue", venue)):
        problem = display_text_problem(text)
        if problem:
            problems.append(f"{what} {problem}")
    if starts_at.tzinfo is None:
        problems.append("starts_at must carry a time zone")
    if price is None:
        problems.append("price is required for an event without ticket types")
    elif isinstance(price, bool) or not isinstance(price, int) or price < 0:
        problems.append("price must be a whole number of minor units (cents), 0 or more")
    if not _CURRENCY.match(currency):
        problems.append("currency must be a three-letter ISO 4217 code such as EUR")
    if capacity is None:
        problems.append("capacity is required for an event without ticket types")
    elif isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        problems.append("capacity must be at least 1")
    if not 1 <= per_order_max <= MAX_PER_ORDER:
        problems.append(f"per_order_max must be between 1 and {MAX_PER_ORDER}")
    limit = per_user_limit if per_user_limit is not None else per_order_max
    if limit < 1:
        problems.append("per_user_limit must be at least 1")
    elif limit < per_order_max:
        problems.append("per_user_limit must not be below per_order_max")
    size = capacity if isinstance(capacity, int) and capacity >= 1 else 1
    shards = shard_count if shard_count is not None else default_shard_count(size)
    if not 1 <= shards <= MAX_SHARDS:
        problems.append(f"shard_count must be between 1 and {MAX_SHARDS}")
    elif isinstance(capacity, int) and capacity >= 1 and shards > capacity and catalogue is None:
        problems.append("shard_count must not exceed capacity")
    if not 1 <= hold_minutes <= 24 * 60:
        problems.append("hold_minutes must be between 1 and 1440")
    threshold = low_stock_threshold if low_stock_threshold is not None else max(1, size // 10)
    if threshold < 0:
        problems.append("low_stock_threshold must not be negative")
    if problems:
        raise InvalidRequest("invalid event: " + "; ".join(problems))
    return Event(
        id=event_id,
        name=name.strip(),
        venue=venue.strip(),
        starts_at=starts_at,
        price=price or 0,
        currency=currency,
        capacity=size,
        per_order_max=per_order_max,
        per_user_limit=limit,
        shard_count=shards,
        status=status,
        hold_minutes=hold_minutes,
        low_stock_threshold=threshold,
        created_at=now,
        organiser_id=organiser_id,
        catalogue=catalogue,
        seat_map=seat_map,
    )


@dataclass(frozen=True)
class InventoryShard:
    id: str
    capacity: int
    available: int
    held: int = 0
    sold: int = 0
    pool: str = DEFAULT_POOL_ID  # the quota (``ticket_types``) whose tickets this shard counts

    def __post_init__(self) -> None:
        if min(self.capacity, self.available, self.held, self.sold) < 0:
            raise ValueError(f"shard {self.id} has a negative count: {self}")
        if self.available + self.held + self.sold != self.capacity:
            raise ValueError(f"shard {self.id} counts do not add up: {self}")

    def take(self, quantity: int) -> InventoryShard:
        """Sell ``quantity`` tickets from this shard."""
        if quantity < 1:
            raise ValueError("quantity must be positive")
        if quantity > self.available:
            raise SoldOut("", f"shard {self.id} has {self.available} tickets, asked for {quantity}")
        return replace(self, available=self.available - quantity, sold=self.sold + quantity)

    def hold(self, quantity: int) -> InventoryShard:
        """Reserve ``quantity`` available tickets for a cart: neither available nor sold."""
        if quantity < 1:
            raise ValueError("quantity must be positive")
        if quantity > self.available:
            raise SoldOut("", f"shard {self.id} has {self.available} tickets, asked for {quantity}")
        return replace(self, available=self.available - quantity, held=self.held + quantity)

    # The moves below only shift tickets this shard already reserved or sold, so they are
    # written as server-side increments (see ``store.documents.shard_move``): they can never
    # take a ticket that someone else took, and need no precondition on the shard.


class ShardMove(StrEnum):
    """A change of a shard's counts, written as server-side increments.

    ``SELL`` and ``HOLD`` take from ``available``: only the event's allocator writes them, with
    the lease that makes it the one writer that takes (its view of ``available`` is exact or a
    lower bound, so an increment never takes a count below zero). Every other move only gives
    tickets back or shifts tickets a hold or order already owns.
    """

    SELL = "sell"  # available -> sold (a purchase)
    HOLD = "hold"  # available -> held (a cart)
    CONFIRM = "confirm"  # held -> sold (a hold becomes an order)
    UNHOLD = "unhold"  # held -> available (a hold is released or expires)
    REFUND = "refund"  # sold -> available (a ticket is cancelled)
    GROW = "grow"  # capacity and available grow (a new release)


def shard_deltas(move: ShardMove, quantity: int) -> dict[str, int]:
    """The increments of one move: they keep ``available + held + sold == capacity``."""
    if quantity < 1:
        raise ValueError("quantity must be positive")
    return {
        ShardMove.SELL: {"available": -quantity, "sold": quantity},
        ShardMove.HOLD: {"available": -quantity, "held": quantity},
        ShardMove.CONFIRM: {"held": -quantity, "sold": quantity},
        ShardMove.UNHOLD: {"held": -quantity, "available": quantity},
        ShardMove.REFUND: {"sold": -quantity, "available": quantity},
        ShardMove.GROW: {"capacity": quantity, "available": quantity},
    }[move]


def plan_allocation(
    shards: Sequence[InventoryShard], quantity: int, event_id: str, rng: random.Random
) -> dict[str, int]:
    """Choose which shards to take ``quantity`` tickets from.

    Prefers one shard that can serve the whole order (fewer documents in the commit, fewer
    conflicts), chosen at random so that concurrent buyers spread out; otherwise takes from
    several shards in random order. Raises ``SoldOut`` / ``NotEnoughTickets``.
    """
    with_stock = [s for s in shards if s.available > 0]
    total = sum(s.available for s in with_stock)
    if total == 0:
        raise SoldOut(event_id)
    if total < quantity:
        raise NotEnoughTickets(event_id, quantity, total)
    whole = [s for s in with_stock if s.available >= quantity]
    if whole:
        return {rng.choice(whole).id: quantity}
    rng.shuffle(with_stock)
    plan: dict[str, int] = {}
    left = quantity
    for shard in with_stock:
        n = min(shard.available, left)
        plan[shard.id] = n
        left -= n
        if left == 0:
            break
    return plan


def order_id_for(user_id: str, idempotency_key: str) -> str:
    """The order id derives from the buyer and the idempotency key, so a retry finds the first order."""
    if not _KEY.match(idempotency_key):
        raise InvalidRequest(
            "idempotency key must be 1-128 characters of letters, digits, '.', '_', ':' or '-'"
        )
    digest = hashlib.sha256(f"{user_id}\x00{idempotency_key}".encode()).hexdigest()
    return f"o_{digest[:24]}"


def ticket_ids_for(order_id: str, quantity: int) -> list[str]:
    return [f"{order_id}-t{n:02d}" for n in range(1, quantity + 1)]


def new_order(
    *,
    order_id: str,
    event: Event,
    user_id: str,
    quantity: int,
    allocations: Mapping[str, int],
    idempotency_key: str,
    hold_id: str | None = None,
    lines: Sequence[OrderLine] = (),
) -> tuple[Order, list[Ticket]]:
    """An order at the event's current price and its tickets (ids derived from the order id).

    With ``lines`` (an event with ticket types), each line keeps its own price, and the tickets
    follow the lines in order, each with its type and, for seated types, its seat.
    """
    ticket_ids = ticket_ids_for(order_id, quantity)
    prices = {line.unit_price for line in lines}
    order = Order(
        id=order_id, event_id=event.id, user_id=user_id, quantity=quantity,
        unit_price=(prices.pop() if len(prices) == 1 else 0) if lines else event.price,
        currency=event.currency, allocations=dict(allocations), idempotency_key=idempotency_key,
        ticket_ids=tuple(ticket_ids), hold_id=hold_id, lines=tuple(lines),
    )
    kinds: list[tuple[str | None, str | None]] = [
        (line.type_id, line.seat_ids[i] if line.seat_ids else None)
        for line in lines for i in range(line.quantity)] or [(None, None)] * quantity
    tickets = [Ticket(id=t, order_id=order_id, event_id=event.id, user_id=user_id, code=new_ticket_code(),
                      type_id=type_id, seat=seat)
               for t, (type_id, seat) in zip(ticket_ids, kinds, strict=True)]
    return order, tickets


def new_ticket_code() -> str:
    """The secret printed on a ticket (QR code); unguessable, not derived from ids."""
    return secrets.token_urlsafe(12)


@dataclass(frozen=True)
class Order:
    id: str
    event_id: str
    user_id: str
    quantity: int
    unit_price: int
    currency: str
    allocations: Mapping[str, int]
    idempotency_key: str
    ticket_ids: tuple[str, ...]
    status: OrderStatus = OrderStatus.CONFIRMED
    cancelled_quantity: int = 0
    created_at: datetime | None = None
    hold_id: str | None = None
    # Events with ticket types: one line per type, at the price it was sold for. ``unit_price``
    # is then that price if all lines share it, else 0; ``amount`` adds the lines up.
    lines: tuple[OrderLine, ...] = ()

    @property
    def amount(self) -> int:
        if self.lines:
            return sum(line.amount for line in self.lines)
        return self.unit_price * self.quantity

    @property
    def active_quantity(self) -> int:
        return self.quantity - self.cancelled_quantity

    def same_request(self, event_id: str, quantity: int) -> bool:
        return self.event_id == event_id and self.quantity == quantity

    def require_same_request(self, event_id: str, quantity: int) -> None:
        if not self.same_request(event_id, quantity):
            raise IdempotencyConflict(
                f"idempotency key {self.idempotency_key!r} was already used for order {self.id} "
                f"({self.quantity} tickets for event {self.event_id}); use a new key for a new purchase"
            )


@dataclass(frozen=True)
class Ticket:
    id: str
    order_id: str
    event_id: str
    user_id: str
    code: str
    status: TicketStatus = TicketStatus.VALID
    type_id: str | None = None  # events with ticket types
    seat: str | None = None  # reserved seating: "section:row:number"

    @property
    def section_row_number(self) -> tuple[str, str, int] | None:
        if self.seat is None:
            return None
        section, row, number = self.seat.split(":")
        return section, row, int(number)


@dataclass(frozen=True)
class BuyerRecord:
    """What one user has bought for one event: the document that enforces the per-user limit."""

    event_id: str
    user_id: str
    tickets: int = 0
    order_ids: tuple[str, ...] = field(default_factory=tuple)
    held: int = 0  # tickets in this user's live holds for the event
    types: Mapping[str, int] = field(default_factory=dict)  # tickets bought, per ticket type
    held_types: Mapping[str, int] = field(default_factory=dict)  # tickets in live holds, per ticket type

    @property
    def counted(self) -> int:
        """What the per-user limit counts: tickets bought (and not cancelled) plus tickets held.

        Counting holds stops a user from reserving the limit in carts and buying it again.
        """
        return self.tickets + self.held

    @property
    def counted_types(self) -> dict[str, int]:
        """What each type's per-user limit counts: bought plus held of that type."""
        out = dict(self.types)
        for type_id, n in self.held_types.items():
            out[type_id] = out.get(type_id, 0) + n
        return out


# --- sale status ---------------------------------------------------------------------------

_SALE_TRANSITIONS: dict[SaleStatus, frozenset[SaleStatus]] = {
    SaleStatus.DRAFT: frozenset({SaleStatus.ON_SALE, SaleStatus.CLOSED}),
    SaleStatus.ON_SALE: frozenset({SaleStatus.PAUSED, SaleStatus.CLOSED}),
    SaleStatus.PAUSED: frozenset({SaleStatus.ON_SALE, SaleStatus.CLOSED}),
    SaleStatus.CLOSED: frozenset(),
}


def next_sale_status(current: SaleStatus, wanted: SaleStatus) -> SaleStatus:
    """Pause/resume/close rules: a closed sale stays closed; asking for the current status is a no-op."""
    if wanted is current:
        return current
    if wanted not in _SALE_TRANSITIONS[current]:
        raise InvalidSaleTransition(current.value, wanted.value)
    return wanted


# --- holds ---------------------------------------------------------------------------------


class HoldStatus(StrEnum):
    ACTIVE = "active"
    CONFIRMED = "confirmed"
    RELEASED = "released"  # given up by the user
    EXPIRED = "expired"  # released by the sweeper


@dataclass(frozen=True)
class Hold:
    """Tickets reserved for one user until ``expires_at`` (a checkout cart).

    While active, its ``quantity`` is counted in ``held`` of the shards in ``allocations``.
    """

    id: str
    event_id: str
    user_id: str
    quantity: int
    allocations: Mapping[str, int]
    expires_at: datetime
    status: HoldStatus = HoldStatus.ACTIVE
    idempotency_key: str = ""
    order_id: str | None = None
    created_at: datetime | None = None
    # Events with ticket types: the held lines, priced when held, with their seats (seated types).
    lines: tuple[OrderLine, ...] = ()

    @property
    def seat_ids(self) -> tuple[str, ...]:
        return tuple(s for line in self.lines for s in line.seat_ids)

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def require_confirmable(self, now: datetime) -> None:
        """Raises ``HoldExpired`` / ``HoldNotActive`` unless the hold can become an order now."""
        if self.status is HoldStatus.EXPIRED or (self.status is HoldStatus.ACTIVE and self.is_expired(now)):
            raise HoldExpired(self.id)
        if self.status is not HoldStatus.ACTIVE:
            raise HoldNotActive(self.id, self.status.value)


def hold_id_for(user_id: str, idempotency_key: str) -> str:
    """Like orders, a hold id derives from the user and the key: a retried request finds the first hold."""
    return "h_" + order_id_for(user_id, idempotency_key)[2:]


def order_id_for_hold(user_id: str, hold_id: str) -> str:
    """The order a hold becomes: one per hold, so confirming twice returns the same order.

    Its own namespace (prefix ``oh_``, a digest of a string no idempotency key can spell), so no
    purchase's ``Idempotency-Key`` can take it, and any hold id, however long, has one.
    """
    digest = hashlib.sha256(f"hold\x00{user_id}\x00{hold_id}".encode()).hexdigest()
    return f"oh_{digest[:24]}"


# --- cancellations -------------------------------------------------------------------------


def ticket_shards(order: Order, quota_ids: Callable[[str], Sequence[str]] | None = None) -> dict[str, tuple[str, ...]]:
    """Which shards each ticket of an order counts against (one per quota its type takes from).

    Tickets do not record their shards; the order's allocations are spread over its tickets by
    a stable rule, so a cancelled ticket always goes back to the same shards and no shard's
    ``sold`` can go below zero. A single-type order spreads its allocations over its tickets in
    ticket order and shard-id order. An order with ticket types (``quota_ids`` gives the quotas
    of a type, ``Catalogue.type(t).quota_ids``) does the same per quota: the allocations of a
    quota's shards (``{quota}.sNNN``) over the tickets whose type takes from that quota.
    """
    out: dict[str, list[str]] = {t: [] for t in order.ticket_ids}
    if not order.lines:
        tickets = iter(order.ticket_ids)
        for sid in sorted(order.allocations):
            for _ in range(order.allocations[sid]):
                out[next(tickets)].append(sid)
        return {t: tuple(s) for t, s in out.items()}
    if quota_ids is None:
        raise ValueError("an order with ticket types needs the quotas of its types")
    types = ticket_types_of(order)
    by_quota: dict[str, list[str]] = {}
    for sid in sorted(order.allocations):
        by_quota.setdefault(shard_quota(sid), []).append(sid)
    for quota, sids in by_quota.items():
        tickets = iter(t for t in order.ticket_ids if quota in quota_ids(types[t]))
        for sid in sids:
            for _ in range(order.allocations[sid]):
                out[next(tickets)].append(sid)
    return {t: tuple(s) for t, s in out.items()}


def ticket_types_of(order: Order) -> dict[str, str]:
    """The ticket type of each ticket of an order with types (tickets follow the lines in order)."""
    kinds = [line.type_id for line in order.lines for _ in range(line.quantity)]
    return dict(zip(order.ticket_ids, kinds, strict=True))


def ticket_seats_of(order: Order) -> dict[str, str]:
    """The seat of each seated ticket of an order (tickets follow the lines in order)."""
    out: dict[str, str] = {}
    tickets = iter(order.ticket_ids)
    for line in order.lines:
        for i in range(line.quantity):
            t = next(tickets)
            if line.seat_ids:
                out[t] = line.seat_ids[i]
    return out


def ticket_prices_of(order: Order) -> dict[str, int]:
    """The price each ticket was sold at (per line for an order with types)."""
    if not order.lines:
        return dict.fromkeys(order.ticket_ids, order.unit_price)
    prices = [line.unit_price for line in order.lines for _ in range(line.quantity)]
    return dict(zip(order.ticket_ids, prices, strict=True))


def choose_tickets_to_cancel(
    order: Order, valid_ticket_ids: Sequence[str], requested: Sequence[str] | None,
    types: Mapping[str, int] | None = None,
) -> list[str]:
    """The tickets a cancellation voids: the requested ones (all by default) still valid.

    ``types`` ({type id: n}, an order with ticket types) asks for n of the still-valid tickets of
    each type instead (the last ones of the line first); a type not in the order, or more than
    are still valid, is ``InvalidRequest``. Tickets already void are skipped when named by id,
    which makes cancelling twice harmless.
    """
    valid = set(valid_ticket_ids)
    if types is not None:
        if requested is not None:
            raise InvalidRequest("name the tickets to cancel by id or by type, not both")
        kinds = ticket_types_of(order) if order.lines else {}
        chosen: list[str] = []
        for type_id, n in sorted(types.items()):
            of_type = [t for t in order.ticket_ids if kinds.get(t) == type_id]
            if not of_type:
                raise InvalidRequest(f"order {order.id} has no tickets of type {type_id!r}")
            live = [t for t in of_type if t in valid]
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(live):
                raise InvalidRequest(f"order {order.id} has {len(live)} valid tickets of type {type_id!r}, "
                                     f"cannot cancel {n!r}")
            chosen += live[len(live) - n:]
        return [t for t in order.ticket_ids if t in set(chosen)]
    if requested is not None:
        unknown = sorted(set(requested) - set(order.ticket_ids))
        if unknown:
            raise InvalidRequest(f"tickets {unknown} are not part of order {order.id}")
        wanted = [t for t in order.ticket_ids if t in set(requested)]
    else:
        wanted = list(order.ticket_ids)
    return [t for t in wanted if t in valid]


def cancel_order_tickets(order: Order, count: int) -> Order:
    """The order after ``count`` more of its tickets were cancelled."""
    cancelled = order.cancelled_quantity + count
    if cancelled > order.quantity:
        raise ValueError(f"order {order.id} cannot cancel {cancelled} of {order.quantity} tickets")
    status = OrderStatus.CANCELLED if cancelled == order.quantity else OrderStatus.PARTIALLY_CANCELLED
    return replace(order, cancelled_quantity=cancelled, status=status)


def refund_id_for(order_id: str, ticket_ids: Sequence[str]) -> str:
    """Stable per (order, set of tickets): a retried cancellation writes the same refund."""
    digest = hashlib.sha256("\x00".join([order_id, *sorted(ticket_ids)]).encode()).hexdigest()
    return f"r_{digest[:24]}"


@dataclass(frozen=True)
class Refund:
    id: str
    order_id: str
    event_id: str
    user_id: str
    ticket_ids: tuple[str, ...]
    amount: int
    currency: str
    by_organiser: bool = False
    status: str = "pending"  # the payment provider's integration settles it

    @property
    def quantity(self) -> int:
        return len(self.ticket_ids)
