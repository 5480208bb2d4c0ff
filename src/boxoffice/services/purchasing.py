"""Use case: a buyer purchases tickets.

``purchase_tickets`` is the one entry point, from any number of app instances at once. It
validates the request before touching anything, then asks the event's batch allocator
(``services.admission.ask``): the request joins the event's admission queue in arrival order,
the allocator decides it with many others in memory and commits them in one atomic batch
(order, tickets, buyer record, outbox message, shard counts and the answer), and the call
returns that answer. Nothing here races other buyers: the allocator is the event's one
writer that takes tickets, fenced by its lease.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.cloud import firestore

from boxoffice.domain.allocation import RequestKind, TicketRequest
from boxoffice.domain.errors import InvalidQuantity, InvalidRequest, OrderNotFound
from boxoffice.domain.model import MAX_PER_ORDER, Order, order_id_for
from boxoffice.log import kv
from boxoffice.services.admission import DEFAULT_WAIT_S, ask
from boxoffice.store.documents import order_from_doc, order_ref

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = DEFAULT_WAIT_S


@dataclass(frozen=True)
class PurchaseResult:
    order: Order
    replayed: bool
    attempts: int


def make_request(
    event_id: str, user_id: str, quantity: int | None, idempotency_key: str, kind: RequestKind = RequestKind.PURCHASE,
    *, types: Mapping[str, int] | None = None, seats: Sequence[str] | None = None,
) -> TicketRequest:
    """Check what can be checked without the database. Raises ``InvalidRequest``.

    ``types`` ({type id: quantity}) or ``seats`` (seat ids) ask an event with ticket types for
    those; ``quantity`` may then be left out (it is their total, and must agree if given).
    """
    lines = tuple(sorted((types or {}).items()))
    seat_ids = tuple(seats or ())
    if lines or seat_ids:
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for _, n in lines):
            raise InvalidQuantity("every ticket type needs a whole number of tickets, 1 or more")
        total = sum(n for _, n in lines) if lines else len(seat_ids)
        if quantity is not None and quantity != total:
            raise InvalidQuantity(f"quantity {quantity} disagrees with the {total} tickets named by type or seat")
        quantity = total
    if quantity is None:
        raise InvalidQuantity("say how many tickets: a quantity, or quantities by ticket type, or seats")
    if not isinstance(event_id, str) or not event_id.strip() or "/" in event_id:
        raise InvalidRequest("event id must be a non-empty string without '/'")
    if not isinstance(user_id, str) or not user_id.strip() or "/" in user_id or len(user_id) > 128:
        raise InvalidRequest("user id must be 1-128 characters without '/'")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_PER_ORDER:
        raise InvalidQuantity(f"quantity must be a whole number between 1 and {MAX_PER_ORDER}, got {quantity!r}")
    order_id = order_id_for(user_id, idempotency_key)
    request_id = order_id if kind is RequestKind.PURCHASE else "h_" + order_id[2:]
    return TicketRequest(id=request_id, kind=kind, event_id=event_id, user_id=user_id, quantity=quantity,
                         idempotency_key=idempotency_key, lines=lines, seats=seat_ids)


def purchase_tickets(
    db: firestore.Client,
    event_id: str,
    user_id: str,
    quantity: int | None,
    idempotency_key: str,
    *,
    deadline_s: float = DEFAULT_DEADLINE_S,
    types: Mapping[str, int] | None = None,
    seats: Sequence[str] | None = None,
) -> PurchaseResult:
    """Buy ``quantity`` tickets of an event for a user, exactly once per idempotency key.

    Guarantees: the inventory update, the order, its tickets, the buyer's per-event record and
    the outbox message are committed together or not at all; no shard goes below zero; the
    buyer's total for the event never exceeds the per-user limit, even under concurrent
    requests; buyers are served in the order the queue received them; the same key returns the
    first order (``replayed=True``).

    Raises ``InvalidRequest``/``InvalidQuantity``, ``EventNotFound``, ``EventNotOnSale``,
    ``PerUserLimitExceeded``, ``SoldOut``/``NotEnoughTickets``, ``IdempotencyConflict``, or
    ``AnswerPending`` (a ``ContentionTimeout``) when the answer did not come within
    ``deadline_s``: the request is still queued, and the same key later returns its answer.

    By ticket type (``types``) or seat (``seats``), also ``UnknownTicketType``,
    ``TicketTypeNotOnSale``, ``TicketTypeSoldOut``, ``PerUserTypeLimitExceeded``,
    ``SeatUnavailable`` and ``SeatNotInMap``; seated types get the best seats available
    together (``domain.seating``), in arrival order.
    """
    request = make_request(event_id, user_id, quantity, idempotency_key, types=types, seats=seats)
    asked = ask(db, request, wait_s=deadline_s)
    if not asked.answer.granted:
        raise asked.answer.error()
    snap = order_ref(db, request.id).get()
    if not snap.exists:  # cannot happen: the answer and the order are one commit
        raise OrderNotFound(request.id)
    order = order_from_doc(request.id, snap.to_dict() or {})
    kv(log, logging.INFO, "purchase.done", order_id=order.id, event_id=event_id, user_id=user_id,
       quantity=quantity, replayed=asked.replayed, waited_s=round(asked.waited_s, 3))
    return PurchaseResult(order, asked.replayed, request.attempt)
