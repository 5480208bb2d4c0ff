"""Errors a caller can act on.

Each is part of the interface: the CLI maps them to exit codes and the HTTP API to 4xx
problem responses. Raising one of them means nothing was written.
"""

from __future__ import annotations

from datetime import datetime


class BoxofficeError(Exception):
    """Base of every error that is the caller's to handle (never a bug)."""

    code = "boxoffice_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(BoxofficeError):
    """The input breaks a rule that does not depend on the database (bad quantity, empty name)."""

    code = "invalid_request"


class InvalidQuantity(InvalidRequest):
    code = "invalid_quantity"


class NotFound(BoxofficeError):
    code = "not_found"


class EventNotFound(NotFound):
    code = "event_not_found"

    def __init__(self, event_id: str) -> None:
        super().__init__(f"no event with id {event_id!r}")
        self.event_id = event_id


class EventNotOnSale(BoxofficeError):
    code = "event_not_on_sale"

    def __init__(self, event_id: str, status: str) -> None:
        super().__init__(f"event {event_id!r} is not on sale (status: {status})")
        self.event_id = event_id
        self.status = status


class Forbidden(BoxofficeError):
    """The caller is known but may not do this (the HTTP API answers 403)."""

    code = "forbidden"


class NotEventOrganiser(Forbidden):
    code = "not_event_organiser"

    def __init__(self, event_id: str) -> None:
        super().__init__(f"only the organiser of event {event_id!r} may change it")
        self.event_id = event_id


class OrderNotFound(NotFound):
    """No such order, or it belongs to someone else (the two are not told apart, on purpose)."""

    code = "order_not_found"

    def __init__(self, order_id: str) -> None:
        super().__init__(f"no order with id {order_id!r}")
        self.order_id = order_id


class PerUserLimitExceeded(BoxofficeError):
    code = "per_user_limit_exceeded"

    def __init__(self, limit: int, already: int, requested: int) -> None:
        super().__init__(
            f"at most {limit} tickets per buyer for this event: you have {already}, "
            f"asked for {requested} more"
        )
        self.limit = limit
        self.already = already
        self.requested = requested


class SoldOut(BoxofficeError):
    """No ticket is available right now (held tickets may still come back)."""

    code = "sold_out"
    # True when an app instance refused at once from the event's summary (nothing was queued),
    # and the server time at which it read that summary (the request's arrival, for fairness)
    at_instance: bool = False
    seen_at: datetime | None = None

    def __init__(self, event_id: str, message: str | None = None) -> None:
        super().__init__(message or f"event {event_id!r} is sold out")
        self.event_id = event_id


class NotEnoughTickets(SoldOut):
    """Fewer tickets are available than were asked for; the buyer may ask for fewer."""

    code = "not_enough_tickets"

    def __init__(self, event_id: str, requested: int, available: int) -> None:
        super().__init__(
            event_id, f"only {available} tickets left for event {event_id!r}, asked for {requested}"
        )
        self.requested = requested
        self.available = available


class IdempotencyConflict(BoxofficeError):
    """The idempotency key was already used for a request with other parameters."""

    code = "idempotency_conflict"


class ContentionTimeout(BoxofficeError):
    """The purchase could not be committed before its deadline because of contention.

    With sharded inventory this should not happen while tickets remain; the flash-sale
    simulator counts it as an error.
    """

    code = "contention_timeout"


class HoldNotFound(NotFound):
    code = "hold_not_found"

    def __init__(self, hold_id: str) -> None:
        super().__init__(f"no hold with id {hold_id!r}")
        self.hold_id = hold_id


class HoldExpired(BoxofficeError):
    """The hold ran out before it was confirmed; its tickets went back on sale."""

    code = "hold_expired"

    def __init__(self, hold_id: str) -> None:
        super().__init__(f"hold {hold_id!r} has expired: its tickets went back on sale, please start again")
        self.hold_id = hold_id


class HoldNotActive(BoxofficeError):
    """The hold was released or already turned into an order by another request."""

    code = "hold_not_active"

    def __init__(self, hold_id: str, status: str) -> None:
        super().__init__(f"hold {hold_id!r} is {status}, it cannot be used any more")
        self.hold_id = hold_id
        self.status = status


class NotAllowed(BoxofficeError):
    """The caller may not act on this object (someone else's order or hold)."""

    code = "not_allowed"


class InvalidSaleTransition(InvalidRequest):
    code = "invalid_sale_transition"

    def __init__(self, current: str, wanted: str) -> None:
        super().__init__(f"a sale that is {current} cannot become {wanted}")
        self.current = current
        self.wanted = wanted


class NotSoldOut(BoxofficeError):
    """The waitlist is for sold-out events; tickets can be bought right now."""

    code = "not_sold_out"

    def __init__(self, event_id: str, available: int) -> None:
        super().__init__(f"event {event_id!r} has {available} tickets available: buy them instead of waiting")
        self.event_id = event_id
        self.available = available


# --- ticket types and seats ------------------------------------------------------------------


class InvalidTicketTypes(InvalidRequest):
    """An event's ticket types or pools contradict each other (the HTTP API answers 422)."""

    code = "invalid_ticket_types"


class UnknownTicketType(InvalidTicketTypes):
    """A request, a seat or a type names a ticket type (or pool) the event does not have."""

    code = "unknown_ticket_type"

    def __init__(self, names: list[str], what: str = "ticket type") -> None:
        super().__init__(f"unknown {what}{'s' if len(names) > 1 else ''}: {', '.join(names)}")
        self.names = names


class OvercommittedPool(InvalidTicketTypes):
    """Pools overlap or promise more tickets than they (or their seats) hold."""

    code = "overcommitted_pool"


class InvalidSaleWindow(InvalidTicketTypes):
    code = "invalid_sale_window"


class TicketTypeNotOnSale(BoxofficeError):
    """The type's sale window is not open right now (too early or already closed)."""

    code = "ticket_type_not_on_sale"

    def __init__(self, type_id: str, reason: str) -> None:
        super().__init__(f"ticket type {type_id!r} is not on sale: {reason}")
        self.type_id = type_id


class InvalidSeatMap(InvalidRequest):
    """The seat map is malformed: duplicate seats, empty rows, seats of no known type."""

    code = "invalid_seat_map"


class SeatNotInMap(InvalidRequest):
    """A seat named by a request (or a blocked seat) is not part of the event's seat map."""

    code = "seat_not_in_map"

    def __init__(self, seat_ids: list[str]) -> None:
        super().__init__(f"not in this event's seat map: {', '.join(seat_ids)}")
        self.seat_ids = seat_ids


class SeatUnavailable(BoxofficeError):
    """A requested seat is taken (sold or held by someone) or blocked; choose other seats."""

    code = "seat_unavailable"

    def __init__(self, seat_ids: list[str], reason: str = "taken") -> None:
        super().__init__(f"seat{'s' if len(seat_ids) > 1 else ''} {', '.join(seat_ids)} "
                         f"{'are' if len(seat_ids) > 1 else 'is'} {reason}")
        self.seat_ids = seat_ids
        self.reason = reason


class TicketTypeSoldOut(SoldOut):
    """Fewer tickets of one type are left than were asked for (none, or ``available``)."""

    code = "ticket_type_sold_out"

    def __init__(self, event_id: str, type_id: str, requested: int, available: int) -> None:
        detail = "is sold out" if available == 0 else f"has only {available} left, asked for {requested}"
        super().__init__(event_id, f"ticket type {type_id!r} of event {event_id!r} {detail}")
        self.type_id = type_id
        self.requested = requested
        self.available = available


class PerUserTypeLimitExceeded(PerUserLimitExceeded):
    code = "per_user_type_limit_exceeded"

    def __init__(self, limit: int, already: int, requested: int, type_id: str) -> None:
        super().__init__(limit, already, requested)
        self.message = (f"at most {limit} {type_id!r} tickets per buyer for this event: "
                        f"you have {already}, asked for {requested} more")
        self.args = (self.message,)
        self.type_id = type_id

class AnswerPending(ContentionTimeout):
    """The request is queued but its answer did not arrive in time; ask again with the same key
    (the allocator answers it exactly once, and the same key then returns that answer)."""

    code = "answer_pending"

    def __init__(self, request_id: str, waited_s: float, *, event_id: str | None = None,
                 queued_at: datetime | None = None) -> None:
        super().__init__(
            f"request {request_id} is queued but not answered after {waited_s:.1f}s; nothing is lost: "
            "ask again with the same idempotency key to get its answer (locally, the allocator runs in "
            "`boxoffice worker`)"
        )
        self.request_id = request_id
        self.event_id = event_id
        self.queued_at = queued_at  # when it entered the queue (this instance's clock)


def _all_subclasses(cls: type[BoxofficeError]) -> list[type[BoxofficeError]]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_all_subclasses(sub)]
    return out


def error_from_answer(code: str, message: str, details: dict[str, object]) -> BoxofficeError:
    """Rebuild the named error an allocator recorded in an answer (same class, message and fields)."""
    cls = next((c for c in _all_subclasses(BoxofficeError) if c.code == code), BoxofficeError)
    exc = cls.__new__(cls)
    BoxofficeError.__init__(exc, message)
    for key, value in details.items():
        setattr(exc, key, value)
    return exc
