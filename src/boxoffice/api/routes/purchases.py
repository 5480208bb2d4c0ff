"""Buying tickets, exactly once per Idempotency-Key.

A purchase is a request to the event's batch allocator. The API waits a few seconds for its
answer: 201 with the order when it lands in time, else 202 with ``Location: /v1/purchases/{id}``
to poll (the request stays queued and is answered exactly once).
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import JSONResponse

from boxoffice.api.deps import Db, SignedIn, Throttled, keep_contact
from boxoffice.api.problems import ApiProblem, responses
from boxoffice.api.schemas import ID_PATTERN, HoldOut, OrderOut, PurchaseIn, RefusalOut, RequestOut
from boxoffice.domain.errors import AnswerPending
from boxoffice.services.admission import request_status
from boxoffice.services.holds import get_hold
from boxoffice.services.orders import get_order
from boxoffice.services.purchasing import purchase_tickets

router = APIRouter(prefix="/v1", tags=["purchases"])

KEY_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
RequestId = Annotated[str, Path(pattern=ID_PATTERN)]


def answer_wait_s() -> float:
    """How long a POST waits for the allocator before answering 202 (BOXOFFICE_API_WAIT_S)."""
    return float(os.environ.get("BOXOFFICE_API_WAIT_S", "5"))


def pending(request_id: str, location: str) -> JSONResponse:
    """202: queued, not answered yet; poll ``location``."""
    body = RequestOut(id=request_id, status="pending")
    return JSONResponse(body.model_dump(mode="json"), status_code=202,
                        headers={"Location": location, "Retry-After": "1"})


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
        return pending(exc.request_id, f"/v1/purchases/{exc.request_id}")
    keep_contact(request, caller)
    response.headers["Location"] = f"/v1/orders/{result.order.id}"
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return OrderOut.of(result.order)


def request_out(db: Any, request_id: str, uid: str) -> RequestOut:
    status = request_status(db, request_id, uid)
    answer = status.answer
    if answer is None:
        return RequestOut(id=request_id, status="pending")
    if answer.order_id:
        return RequestOut(id=request_id, status=answer.outcome, order=OrderOut.of(get_order(db, answer.order_id, uid)))
    if answer.hold_id:
        return RequestOut(id=request_id, status=answer.outcome, hold=HoldOut.of(get_hold(db, answer.hold_id)))
    error = answer.error()
    return RequestOut(id=request_id, status=answer.outcome, error=RefusalOut(code=error.code, message=error.message))


@router.get("/purchases/{request_id}", response_model=RequestOut, responses=responses(401, 404, 422))
def show_purchase(request_id: RequestId, caller: SignedIn, db: Db) -> RequestOut:
    """A purchase request of the signed-in user: `pending`, or its answer (the order, or the refusal)."""
    return request_out(db, request_id, caller.uid)
