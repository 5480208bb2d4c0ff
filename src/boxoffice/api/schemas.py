"""Request and response bodies of the HTTP API (pydantic models at the edge only).

The response models are also what `boxoffice ... --json` prints for the same resource: each is
filled from its domain object by one classmethod (``EventOut.of``, ``OrderOut.of``, ...), called
by the API's routes and by the CLI alike, so a script sees the same fields from both.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, overload

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from boxoffice.domain.availability import Summary, compute_summary
from boxoffice.domain.model import MAX_PER_ORDER, MAX_SHARDS, Event, Hold, Order, Ticket, initial_shards
from boxoffice.domain.queue_progress import Place
from boxoffice.domain.ticket_types import OrderLine
from boxoffice.services.events import live_counts
from boxoffice.services.releases import MAX_RELEASE
from boxoffice.services.waitlist import WaitlistEntry

# Ids in paths, cursors and bodies: what our own ids look like. Never a '/' (a Firestore path
# separator), and a letter or digit first, so never Firestore's reserved ids (`__name__`, `__x__`).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,127}$"
MAX_PAGE = 100
_INT32 = 2**31 - 1

# Numbers and flags are taken only as JSON numbers and booleans: no "1", 1.0 or true for a count.
Count = Annotated[int, Strict()]
Flag = Annotated[bool, Strict()]


def _text_timestamp(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string with a time zone, e.g. 2030-05-01T20:00:00+02:00")
    return value


def _representable(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None
    return value


# A time: a string only (not a number of seconds), with a zone, that exists in UTC.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_text_timestamp), AfterValidator(_representable)]


class RequestBody(BaseModel):
    """A request body: unknown fields are refused (no body can carry a user id)."""

    model_config = ConfigDict(extra="forbid")


TYPE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"


class PoolIn(RequestBody):
    id: str = Field(pattern=TYPE_ID_PATTERN)
    capacity: Count = Field(ge=1, le=100_000)


class TicketTypeIn(RequestBody):
    id: str = Field(pattern=TYPE_ID_PATTERN)
    name: str = Field(min_length=1, max_length=100)
    price: Count = Field(ge=0, le=_INT32, description="Price in minor units (cents).")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="Default: the event's.")
    per_order_max: Count | None = Field(default=None, ge=1, le=MAX_PER_ORDER, description="Default: the event's.")
    per_user_limit: Count | None = Field(default=None, ge=1, le=100_000)
    pool: str | None = Field(default=None, pattern=TYPE_ID_PATTERN,
                             description="A shared pool this type draws from; none: a pool of its own.")
    capacity: Count | None = Field(default=None, ge=1, le=100_000,
                                   description="Own pool: its size (seated types: their seats). "
                                               "Shared pool: the most of this type it may sell.")
    opens_at: Timestamp | None = None
    closes_at: Timestamp | None = None


class TicketTypesIn(RequestBody):
    types: list[TicketTypeIn] = Field(min_length=1, max_length=20)
    pools: list[PoolIn] = Field(default_factory=list, max_length=20)


class RowIn(RequestBody):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,19}$")
    first: Count = Field(default=1, ge=1, le=10_000)
    last: Count = Field(ge=1, le=10_000)
    type: str = Field(pattern=TYPE_ID_PATTERN, description="The ticket type its seats are sold as.")
    missing: list[Count] = Field(default_factory=list, max_length=10_000, description="Numbers with no seat (aisles).")
    types: dict[str, list[Count]] = Field(default_factory=dict, description="Seats sold as another type.")


class SectionIn(RequestBody):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,19}$")
    name: str = Field(default="", max_length=100)
    rows: list[RowIn] = Field(min_length=1, max_length=500)


class SeatMapIn(RequestBody):
    """Sections and rows best first (closest to the stage): best available seats follow that order."""

    sections: list[SectionIn] = Field(min_length=1, max_length=100)
    blocked: list[str] = Field(default_factory=list, max_length=20_000, description="Seat ids never sold.")


class EventIn(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    venue: str = Field(min_length=1, max_length=200)
    starts_at: Timestamp = Field(description="In the future, with a time zone.")
    price: Count | None = Field(default=None, ge=0, le=_INT32,
                                description="Ticket price in minor units (cents); not with `types`.")
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    capacity: Count | None = Field(default=None, ge=1, le=100_000,
                                   description="Required without `types`; with them, the pools' total.")
    types: TicketTypesIn | None = Field(default=None, description="Ticket types and shared pools.")
    seats: SeatMapIn | None = Field(default=None, description="A seat map (needs `types`).")
    per_order_max: Count = Field(default=10, ge=1, le=MAX_PER_ORDER)
    per_user_limit: Count | None = Field(default=None, ge=1, le=100_000)
    shard_count: Count | None = Field(default=None, ge=1, le=MAX_SHARDS)
    hold_minutes: Count = Field(default=10, ge=1, le=24 * 60)
    low_stock_threshold: Count | None = Field(default=None, ge=0, le=100_000)
    on_sale: Flag = Field(default=True, description="Put on sale at once (else: draft).")


class EventPatch(RequestBody):
    """Fields an organiser may change; sale state and capacity have their own endpoints."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    venue: str | None = Field(default=None, min_length=1, max_length=200)
    starts_at: Timestamp | None = None
    price: Count | None = Field(default=None, ge=0, le=_INT32)
    per_order_max: Count | None = Field(default=None, ge=1, le=MAX_PER_ORDER)
    per_user_limit: Count | None = Field(default=None, ge=1, le=100_000)
    hold_minutes: Count | None = Field(default=None, ge=1, le=24 * 60)
    low_stock_threshold: Count | None = Field(default=None, ge=0, le=100_000)


class Availability(BaseModel):
    available: int
    held: int
    sold: int
    capacity: int
    live: bool = Field(description="True when counted from the inventory shards just now; "
                                   "False for the display summary, which may lag a few seconds.")
    types: dict[str, dict[str, int]] | None = Field(
        default=None, description="Per ticket type (available, held, sold, capacity); null for a single-type event.")

    @classmethod
    def unsold(cls, event: Event) -> Availability:
        """A just-created event: counted from the shards it was created with (so per type too, as
        its organiser's GET shows it), without reading them back."""
        return cls.counted(compute_summary(initial_shards(event), event.status, event.low_stock_threshold,
                                           event.catalogue))

    @classmethod
    def counted(cls, counts: Summary) -> Availability:
        """Counted from the inventory shards just now (``services.events.live_counts``)."""
        return cls(available=counts.available, held=counts.held, sold=counts.sold, capacity=counts.capacity,
                   live=True, types={k: dict(v) for k, v in counts.types.items()} or None)

    @classmethod
    def of_summary(cls, event: Event, summary: dict[str, Any]) -> Availability:
        """From the event's display summary (one read; may lag the shards a few seconds)."""
        return cls(
            available=int(summary.get("available", event.capacity)), held=int(summary.get("held", 0)),
            sold=int(summary.get("sold", 0)), capacity=int(summary.get("capacity", event.capacity)),
            live=False, types=summary.get("types"),
        )


@overload
def _utc(value: datetime) -> datetime: ...


@overload
def _utc(value: None) -> None: ...


def _utc(value: datetime | None) -> datetime | None:
    """Times out in UTC, as Firestore gives them back: an event reads the same when created and
    when shown later, whatever zone its organiser wrote."""
    return value.astimezone(UTC) if value is not None else None


class EventOut(BaseModel):
    id: str
    name: str
    venue: str
    starts_at: datetime
    price: int
    currency: str
    capacity: int
    per_order_max: int
    per_user_limit: int
    status: str
    hold_minutes: int
    organiser_id: str | None
    availability: Availability
    ticket_types: list[TicketTypeOut] = Field(description="One `general` type for a single-type event.")
    seated: bool = Field(description="Whether the event has a seat map.")

    @classmethod
    def of(cls, event: Event, availability: Availability) -> EventOut:
        return cls(
            id=event.id, name=event.name, venue=event.venue, starts_at=_utc(event.starts_at),
            price=event.price, currency=event.currency, capacity=event.capacity,
            per_order_max=event.per_order_max, per_user_limit=event.per_user_limit,
            status=event.status.value, hold_minutes=event.hold_minutes,
            organiser_id=event.organiser_id, availability=availability,
            ticket_types=[TicketTypeOut(id=t.id, name=t.name, price=t.price, currency=t.currency, pool=t.pool_id,
                                        cap=t.cap, per_order_max=t.per_order_max, per_user_limit=t.per_user_limit,
                                        opens_at=_utc(t.opens_at), closes_at=_utc(t.closes_at), seated=t.seated)
                          for t in event.ticket_types.types],
            seated=event.seat_map is not None,
        )

    @classmethod
    def counted(cls, db: Any, event: Event) -> EventOut:
        """The event as its organiser is answered (its GET, a release, a sale status change, the
        CLI's --json): availability counted from the inventory shards just now."""
        return cls.of(event, Availability.counted(live_counts(db, event)))


class TicketTypeOut(BaseModel):
    id: str
    name: str
    price: int
    currency: str
    pool: str
    cap: int | None
    per_order_max: int
    per_user_limit: int
    opens_at: datetime | None
    closes_at: datetime | None
    seated: bool


class EventPage(BaseModel):
    events: list[EventOut]
    next: str | None = Field(description="Pass as ?after= to get the next page; null on the last page.")

    @classmethod
    def of(cls, rows: list[tuple[Event, dict[str, Any]]], limit: int) -> EventPage:
        """A page of ``(event, summary)`` rows asked with ``limit``: availability from the summaries."""
        return cls(events=[EventOut.of(e, Availability.of_summary(e, s)) for e, s in rows],
                   next=rows[-1][0].id if len(rows) == limit else None)


SEAT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,19}:[A-Za-z0-9][A-Za-z0-9_-]{0,19}:[0-9]{1,5}$"


class PurchaseIn(RequestBody):
    """``quantity`` tickets of a single-type event; or, by ticket type, ``types`` {type: quantity}
    (seated types get the best seats available together) or specific ``seats``."""

    event_id: str = Field(pattern=ID_PATTERN)
    quantity: Count | None = Field(default=None, ge=1, le=MAX_PER_ORDER,
                                   description="Required unless `types` or `seats` say how many.")
    types: dict[Annotated[str, Field(pattern=TYPE_ID_PATTERN)], Annotated[Count, Field(ge=1, le=MAX_PER_ORDER)]] | None = (
        Field(default=None, max_length=20, description="Tickets per ticket type, e.g. {\"vip\": 2}."))
    seats: list[Annotated[str, Field(pattern=SEAT_PATTERN)]] | None = Field(
        default=None, min_length=1, max_length=MAX_PER_ORDER, description="Specific seats, \"section:row:number\".")

    @model_validator(mode="after")
    def _no_explicit_null(self) -> PurchaseIn:
        # Optional means "leave it out", not null: a null count is refused as a body error.
        nulls = sorted(f for f in ("quantity", "types", "seats") if f in self.model_fields_set and getattr(self, f) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} must be left out rather than null")
        return self


class OrderLineOut(BaseModel):
    type_id: str
    quantity: int
    unit_price: int
    amount: int
    currency: str
    seat_ids: list[str]

    @classmethod
    def of_lines(cls, lines: Sequence[OrderLine]) -> list[OrderLineOut]:
        return [cls(type_id=ln.type_id, quantity=ln.quantity, unit_price=ln.unit_price, amount=ln.amount,
                    currency=ln.currency, seat_ids=list(ln.seat_ids)) for ln in lines]


class OrderOut(BaseModel):
    """An order as its buyer sees it. The same purchase replayed gives the same body."""

    id: str
    event_id: str
    user_id: str
    quantity: int
    cancelled_quantity: int
    unit_price: int
    amount: int
    currency: str
    status: str
    ticket_ids: list[str]
    idempotency_key: str
    lines: list[OrderLineOut] = Field(description="By ticket type, at the price sold; empty for a single-type "
                                                  "event. A mixed-price order has unit_price 0.")

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        return cls(
            id=order.id, event_id=order.event_id, user_id=order.user_id, quantity=order.quantity,
            cancelled_quantity=order.cancelled_quantity, unit_price=order.unit_price,
            amount=order.amount, currency=order.currency, status=order.status.value,
            ticket_ids=list(order.ticket_ids), idempotency_key=order.idempotency_key,
            lines=OrderLineOut.of_lines(order.lines),
        )


class TicketOut(BaseModel):
    id: str
    status: str
    code: str
    type_id: str | None = None
    section: str | None = None
    row: str | None = None
    seat: int | None = None

    @classmethod
    def of(cls, ticket: Ticket) -> TicketOut:
        section, row, seat = ticket.section_row_number or (None, None, None)
        return cls(id=ticket.id, status=ticket.status.value, code=ticket.code, type_id=ticket.type_id,
                   section=section, row=row, seat=seat)


class OrderDetail(OrderOut):
    created_at: datetime | None
    tickets: list[TicketOut]


class OrderPage(BaseModel):
    orders: list[OrderOut]
    next: str | None


class HoldIn(PurchaseIn):
    """What a purchase names (a quantity, ticket types or specific seats), held until it expires."""


class HoldOut(BaseModel):
    """Tickets reserved for the caller until ``expires_at``; confirm to buy them."""

    id: str
    event_id: str
    user_id: str
    quantity: int
    status: str = Field(description="active | confirmed | released | expired")
    expires_at: datetime
    order_id: str | None = Field(description="The order it became, once confirmed.")
    idempotency_key: str
    lines: list[OrderLineOut] = Field(default_factory=list, description="By ticket type, at the price held, with "
                                      "the seats held; empty for a single-type event.")

    @classmethod
    def of(cls, hold: Hold) -> HoldOut:
        return cls(id=hold.id, event_id=hold.event_id, user_id=hold.user_id, quantity=hold.quantity,
                   status=hold.status.value, expires_at=hold.expires_at, order_id=hold.order_id,
                   idempotency_key=hold.idempotency_key, lines=OrderLineOut.of_lines(hold.lines))


class CancelIn(RequestBody):
    ticket_ids: list[Annotated[str, Field(pattern=ID_PATTERN)]] | None = Field(
        default=None, min_length=1, max_length=MAX_PER_ORDER,
        description="The tickets to cancel (from the order's ticket_ids); all of them when absent.")
    types: dict[Annotated[str, Field(pattern=TYPE_ID_PATTERN)], Annotated[Count, Field(ge=1, le=MAX_PER_ORDER)]] | None = (
        Field(default=None, min_length=1, max_length=20,
              description="Or, for an order with ticket types: how many tickets of each type to cancel, "
                          "e.g. {\"stalls\": 1}."))

    @model_validator(mode="after")
    def _one_way(self) -> CancelIn:
        nulls = sorted(f for f in ("ticket_ids", "types") if f in self.model_fields_set and getattr(self, f) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} must be left out rather than null")
        if self.ticket_ids is not None and self.types is not None:
            raise ValueError("name the tickets to cancel by ticket_ids or by types, not both")
        return self


class WaitlistOut(BaseModel):
    event_id: str
    user_id: str
    status: str = Field(description="waiting | offered")
    joined_at: datetime | None
    position: int | None = Field(description="1 = next to be offered; null unless waiting.")
    type_id: str | None = Field(default=None, description="The ticket type waited for (an event with types).")

    @classmethod
    def of(cls, entry: WaitlistEntry) -> WaitlistOut:
        return cls(event_id=entry.event_id, user_id=entry.user_id, status=entry.status, joined_at=entry.joined_at,
                   position=entry.position, type_id=entry.type_id)


class WaitlistLeft(BaseModel):
    event_id: str
    user_id: str
    was_waiting: bool


class ReleaseIn(RequestBody):
    quantity: Count = Field(ge=1, le=MAX_RELEASE, description="Tickets to add to the event's inventory.")
    type_id: str | None = Field(default=None, pattern=TYPE_ID_PATTERN,
                                description="The ticket type to release (required for an event with ticket types; "
                                            "not a seated one).")


class SaleStatusIn(RequestBody):
    status: Literal["on_sale", "paused", "closed"] = Field(
        description="on_sale (start or resume), paused, closed (final).")


class RefusalOut(BaseModel):
    code: str
    message: str


class QueuePlaceOut(BaseModel):
    """Where a pending request stands in the event's admission queue: an estimate from the
    allocator's latest progress (docs/decisions.md, "A queued request's place")."""

    state: str = Field(description="waiting_for_allocator (nothing moves; the place is kept) | queued | next")
    queued_at: datetime = Field(description="When the request entered the queue.")
    queued_s: float = Field(description="Seconds since then.")
    ahead: int | None = Field(description="About how many requests before it have no answer yet; null: not known.")
    eta_s: float | None = Field(description="About how many seconds until its answer; null: not known.")
    answering_arrivals_of: datetime | None = Field(
        description="Arrival time of the latest request the allocator answered (all before it are answered).")

    @classmethod
    def of(cls, place: Place) -> QueuePlaceOut:
        return cls(state=place.state, queued_at=place.queued_at, queued_s=round(place.queued_s, 1),
                   ahead=place.ahead, eta_s=place.eta_s, answering_arrivals_of=place.answering_arrivals_of)


class RequestOut(BaseModel):
    """A purchase or hold request: pending in the queue, or its answer.

    ``status`` is ``pending`` (poll again; a signed-in client may instead listen to the
    Firestore document ``requests/{id}``; ``queue`` then says where it stands), ``order`` (see
    ``order``), ``hold`` (see ``hold``) or ``refused`` (see ``error``: sold out, limit...).
    """

    id: str
    status: str = Field(description="pending | order | hold | refused")
    queue: QueuePlaceOut | None = Field(
        default=None, description="While pending: its place in the queue (when the poll URL carries its arrival).")
    order: OrderOut | None = None
    hold: HoldOut | None = None
    error: RefusalOut | None = None


class SaleFiguresOut(BaseModel):
    """An organiser's live figures of one sale (availability is on the event's summary)."""

    event_id: str
    emails: dict[str, int] = Field(description="sent, skipped (no address), failed, pending (being sent)")
    dead_letters: dict[str, int] = Field(
        description="messages: subscriber dead letters; inventory_changes: unresolved trigger failures")
    queue: dict[str, Any] | None = Field(
        description="Admission queue: length (about how many wait), oldest_wait_s (at most), allocator (one "
                    "holds the queue), answers_per_s, answered and answer_p50_ms / answer_p99_ms over the "
                    "last window_s; estimates are null while unknown; null when the event has no request.")
    queue_note: str | None
    tickets_sold: int = Field(description="Counted by the analytics subscriber (lags the summary).")
    tickets_cancelled: int
    orders: int
    revenue: int
    per_minute: dict[str, int] = Field(description="Tickets sold per minute (UTC), from analytics.")
    types: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Events with ticket types: per type, orders, tickets_sold, revenue, tickets_cancelled and "
                    "refunds, from analytics.")
