"""Buying tickets, exactly once per Idempotency-Key.

A purchase is a request to the event's batch allocator. The API waits a few seconds for its
answer: 201 with the order when it lands in time, else 202 with ``Location: /v1/purchases/{id}``
to poll (the request stays queued and is answered exactly once); the 202 and every poll while
it waits say where it stands in the queue (``queue``: an estimate, domain/queue_progress.py).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from boxoffice.api.deps import Db, SignedIn, Throttled, keep_contact
from boxoffice.api.problems import ApiProblem, responses
from boxoffice.api.schemas import ID_PATTERN, HoldOut, OrderOut, PurchaseIn, QueuePlaceOut, RefusalOut, RequestOut
from boxoffice.domain.errors import AnswerPending
from boxoffice.services.admission import queue_place, request_status
from boxoffice.services.holds import get_hold
from boxoffice.services.orders import get_order
from boxoffice.services.purchasing import purchase_tickets

router = APIRouter(prefix="/v1", tags=["purchases"])

KEY_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
RequestId = Annotated[str, Path(pattern=ID_PATTERN)]


def answer_wait_s() -> float:
    """How long a POST waits for the allocator before answering 202 (BOXOFFICE_API_WAIT_S)."""
    return float(os.environ.get("BOXOFFICE_API_WAIT_S", "5"))


def pending(db: Any, exc: AnswerPending, path: str) -> JSONResponse:
    """202: queued, not answered yet, with its place; poll the Location, which carries the
    request's event and arrival time so that any instance can say where it stands."""
    location = path
    queue = None
    if exc.event_id is not None and exc.queued_at is not None:
        location += "?" + urlencode({"event_id": exc.event_id, "queued_at": _rfc3339(exc.queued_at)})
        queue = QueuePlaceOut.of(queue_place(db, exc.event_id, exc.queued_at))
    body = RequestOut(id=exc.request_id, status="pending", queue=queue)
    return JSONResponse(body.model_dump(mode="json"), status_code=202,
                        headers={"Location": location, "Retry-After": "1"})


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


EventHint = Annotated[str | None, Query(pattern=ID_PATTERN, description="The request's event (from the Location).")]
QueuedAt = Annotated[AwareDatetime | None, Query(description="When it entered the queue (from the Location).")]


@router.post("/purchases", status_code=201, response_model=OrderOut,
             responses={202: {"model": RequestOut, "description": "Queued: poll the Location"},
                        **responses(401, 404, 409, 413, 422, 428, 429, 503)})
def purchase(
    body: PurchaseIn,
    caller: Throttled,
    db: Db,
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", pattern=KEY_PATTERN,
        description="Required. A new random key per purchase; resend the same key to retry safely.",
    )] = None,
) -> Any:
    """Buy tickets for the signed-in user.

    201 with the order when the allocator's answer comes within a few seconds; 202 with
    `Location: /v1/purchases/{id}` when it does not (poll it, or listen to `requests/{id}`).
    The same key (for the same user) returns the first order with the same status and body, and
    the header `Idempotent-Replayed: true`; the same key with another event or quantity is a 409.
    A refusal (sold out, limit) binds nothing, so retrying a refused key may later succeed.
    Rate-limited per user and per client address (429 with `Retry-After`).
    """
    if idempotency_key is None:
        raise ApiProblem(428, "idempotency_key_required",
                         "send an Idempotency-Key header (a new random value per purchase) so that "
                         "a retried request cannot buy twice")
    try:
        result = purchase_tickets(db, body.event_id, caller.uid, body.quantity, idempotency_key,
                                  deadline_s=answer_wait_s(), types=body.types, seats=body.seats)
    except AnswerPending as exc:
        keep_contact(request, caller)  # accepted into the queue: the answer's email needs it
        return pending(db, exc, f"/v1/purchases/{exc.request_id}")
    keep_contact(request, caller)
    response.headers["Location"] = f"/v1/orders/{result.order.id}"
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return OrderOut.of(result.order)


def request_out(db: Any, request_id: str, uid: str, event_id: str | None = None,
                queued_at: datetime | None = None) -> RequestOut:
    status = request_status(db, request_id, uid)
    answer = status.answer
    if answer is None:
        place = None if event_id is None or queued_at is None else queue_place(db, event_id, queued_at)
        return RequestOut(id=request_id, status="pending", queue=None if place is None else QueuePlaceOut.of(place))
    if answer.order_id:
        return RequestOut(id=request_id, status=answer.outcome, order=OrderOut.of(get_order(db, answer.order_id, uid)))
    if answer.hold_id:
        return RequestOut(id=request_id, status=answer.outcome, hold=HoldOut.of(get_hold(db, answer.hold_id)))
    error = answer.error()
    return RequestOut(id=request_id, status=answer.outcome, error=RefusalOut(code=error.code, message=error.message))


@router.get("/purchases/{request_id}", response_model=RequestOut, responses=responses(401, 404, 422))
def show_purchase(request_id: RequestId, caller: SignedIn, db: Db, event_id: EventHint = None,
                  queued_at: QueuedAt = None) -> RequestOut:
    """A purchase request of the signed-in user: `pending` (with its place in the queue when
    `event_id` and `queued_at` are given, as in the 202's Location), or its answer (the order,
    or the refusal)."""
    return request_out(db, request_id, caller.uid, event_id, queued_at)
