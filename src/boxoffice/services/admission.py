"""Use case: a buyer asks for tickets (to buy or to hold) and waits for the allocator's answer.

``ask`` is the one path for purchases and holds from any number of app instances:

1. read, in one round trip, the request's answer document (its id derives from the user and
   the idempotency key) and the event. An answer already there is a replay: a grant is
   returned as it is (the same key with other parameters is ``IdempotencyConflict``); a
   refusal binds nothing, as before the queue: the key is asked again, with any parameters,
   under the next attempt number, and may succeed this time.
   Refusals that need no queue are answered at once with nothing written: unknown event, sale
   not open, bad quantity, and sold out when the event's summary (on the event document just
   read, at most about a second behind the shards) already shows nothing left of what is asked.
2. publish the request to the event's admission queue (``store.admission_queue``);
3. wait for the answer (``store.requests.AnswerBoard``) until ``wait_s``; if it has not come
   by then, ``AnswerPending``: the request stays queued and will be answered exactly once,
   and asking again with the same key returns that answer. ``AnswerPending`` carries the
   request's arrival time, from which ``queue_place`` estimates its place while it waits.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from google.cloud import firestore

from boxoffice.domain.allocation import RequestKind, TicketRequest
from boxoffice.domain.availability import gone_per_summary
from boxoffice.domain.errors import (
    AnswerPending,
    EventNotFound,
    IdempotencyConflict,
    SoldOut,
    TicketTypeSoldOut,
)
from boxoffice.domain.model import SaleStatus
from boxoffice.domain.queue_progress import Place, place_in_queue
from boxoffice.log import kv
from boxoffice.store.admission_queue import admission_queue
from boxoffice.store.documents import event_from_doc, event_ref
from boxoffice.store.leases import read_queue_progress
from boxoffice.store.requests import Answer, answer_board, answer_from_doc, request_ref

log = logging.getLogger(__name__)

DEFAULT_WAIT_S = 10.0


@dataclass(frozen=True)
class Asked:
    answer: Answer
    replayed: bool  # the answer was given to an earlier call with the same key
    waited_s: float


def ask(db: firestore.Client, request: TicketRequest, *, wait_s: float = DEFAULT_WAIT_S) -> Asked:
    """Get the allocator's answer to ``request`` (see the module docstring).

    Returns the answer (a grant or a refusal: the caller raises the refusal's named error).
    Raises ``EventNotFound``, ``EventNotOnSale``, ``InvalidQuantity``, ``IdempotencyConflict``
    without queueing, and ``AnswerPending`` when the answer did not come within ``wait_s``.
    """
    started = time.monotonic()
    req_snap, ev_snap = _get_two(db, request_ref(db, request.id), event_ref(db, request.event_id))
    if req_snap.exists:
        prior = answer_from_doc(request.id, req_snap.to_dict() or {})
        if prior.granted:
            if not prior.same_request(request):
                raise IdempotencyConflict(
                    f"idempotency key {request.idempotency_key!r} was already used for {prior.quantity} tickets "
                    f"of event {prior.event_id} ({prior.kind.value}); use a new key for a new request")
            return Asked(prior, replayed=True, waited_s=0.0)
        request = replace(request, attempt=prior.attempt + 1)
    if not ev_snap.exists:
        raise EventNotFound(request.event_id)
    ev_doc = ev_snap.to_dict() or {}  # decoded once: every buyer's request reads the event
    event = event_from_doc(request.event_id, ev_doc)
    if event.status is not SaleStatus.ON_SALE:
        event.require_on_sale()
    event.validate_quantity(request.quantity)
    _refuse_if_known_sold_out(ev_doc, event.catalogue is not None, request, ev_snap.read_time)
    board = answer_board(db)
    request = replace(request, instance=board.instance)
    message_id = admission_queue(db.project).publish(request)
    queued_at = datetime.now(UTC)
    left = max(0.0, wait_s - (time.monotonic() - started))
    answer = board.wait(request.id, request.attempt, left)
    waited = time.monotonic() - started
    if answer is None:
        kv(log, logging.WARNING, "request.pending", request_id=request.id, event_id=request.event_id,
           user_id=request.user_id, waited_s=round(waited, 2))
        raise AnswerPending(request.id, waited, event_id=request.event_id, queued_at=queued_at)
    return Asked(answer, replayed=answer.message_id != message_id, waited_s=waited)


def _refuse_if_known_sold_out(event_doc: dict[str, Any], typed: bool, request: TicketRequest,
                              read_at: Any) -> None:
    """An instance that already knows the event (or a type asked for) is sold out answers at
    once, without queueing: the summary on the event document it has just read says so
    (``domain.availability.gone_per_summary``). Specific seats are always asked of the allocator.
    ``BOXOFFICE_SOLD_OUT_AT_INSTANCE=off`` queues every request."""
    if request.seats or os.environ.get("BOXOFFICE_SOLD_OUT_AT_INSTANCE", "on") == "off":
        return
    gone = gone_per_summary(event_doc.get("summary"), request.lines, typed=typed)
    if gone is None:
        return
    quantity = dict(request.lines).get(gone, request.quantity)
    refusal = SoldOut(request.event_id) if gone == "" else TicketTypeSoldOut(request.event_id, gone, quantity, 0)
    refusal.at_instance, refusal.seen_at = True, read_at
    raise refusal


def _get_two(db: firestore.Client, a: firestore.DocumentReference, b: firestore.DocumentReference) -> tuple[Any, Any]:
    snaps = {s.reference.path: s for s in db.get_all([a, b])}
    return snaps[a.path], snaps[b.path]


def kind_of(hold: bool) -> RequestKind:
    return RequestKind.HOLD if hold else RequestKind.PURCHASE


@dataclass(frozen=True)
class RequestStatus:
    """What a buyer polling a request sees: pending, or its answer."""

    request_id: str
    answer: Answer | None  # None while the request waits in the queue

    @property
    def state(self) -> str:
        return "pending" if self.answer is None else self.answer.outcome


def request_status(db: firestore.Client, request_id: str, user_id: str) -> RequestStatus:
    """The answer to one of ``user_id``'s requests, or pending while there is none.

    A request id derives from the user and an idempotency key, so a caller only knows the ids of
    their own requests; someone else's answered request is ``NotFound`` (as for orders), and an
    id nobody asked for looks pending forever (it reveals nothing).
    """
    from boxoffice.domain.errors import NotFound

    snap = request_ref(db, request_id).get()
    if not snap.exists:
        return RequestStatus(request_id, None)
    answer = answer_from_doc(request_id, snap.to_dict() or {})
    if answer.user_id != user_id:
        raise NotFound(f"no request with id {request_id!r}")
    return RequestStatus(request_id, answer)


def queue_place(db: firestore.Client, event_id: str, queued_at: datetime, now: datetime | None = None) -> Place:
    """Where a request of ``event_id`` that entered the queue at ``queued_at`` and has no answer
    stands, from its allocator's latest progress (``domain.queue_progress``: an estimate)."""
    return place_in_queue(queued_at, read_queue_progress(db, event_id), now or datetime.now(UTC))
