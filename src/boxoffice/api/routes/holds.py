"""Holds (a checkout cart): reserve tickets, then confirm them as an order or release them.

A hold of someone else is answered exactly like a missing one (404), as orders are.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response

from boxoffice.api.deps import Db, SignedIn, Throttled, keep_contact
from boxoffice.api.problems import ApiProblem, responses
from boxoffice.api.routes.purchases import (
    KEY_PATTERN,
    EventHint,
    QueuedAt,
    RequestId,
    answer_wait_s,
    pending,
    request_out,
)
from boxoffice.api.schemas import ID_PATTERN, HoldIn, HoldOut, OrderOut, RequestOut
from boxoffice.domain.errors import AnswerPending, HoldNotFound, NotAllowed
from boxoffice.domain.model import Hold, hold_id_for
from boxoffice.services import holds as service

router = APIRouter(prefix="/v1/holds", tags=["holds"])
HoldId = Annotated[str, Path(pattern=ID_PATTERN)]


def _own_hold(db: Any, hold_id: str, uid: str) -> Hold:
    hold = service.get_hold(db, hold_id)
    if hold.user_id != uid:
        raise HoldNotFound(hold_id)
    return hold


@router.post("", status_code=201, response_model=HoldOut,
             responses={202: {"model": RequestOut, "description": "Queued: poll the Location"},
                        **responses(401, 404, 409, 413, 422, 428, 429, 503)})
def create_hold(
    body: HoldIn,
    caller: Throttled,
    db: Db,
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", pattern=KEY_PATTERN,
        description="Required. A new random key per hold; resend the same key to retry safely.",
    )] = None,
) -> Any:
    """Reserve tickets for the signed-in user until the event's hold time runs out.

    201 with the hold when the allocator's answer comes within a few seconds; 202 with
    `Location: /v1/holds/requests/{id}` when it does not (poll it).
    Held tickets count against the per-user limit and are nobody else's until confirmed,
    released or expired. The same key returns the first hold (`Idempotent-Replayed: true` when
    it existed before this request); the same key with another event or quantity is a 409.
    """
    if idempotency_key is None:
        raise ApiProblem(428, "idempotency_key_required",
                         "send an Idempotency-Key header (a new random value per hold) so that a "
                         "retried request cannot hold twice")
    try:
        existed = service.get_hold(db, hold_id_for(caller.uid, idempotency_key)) is not None
    except HoldNotFound:
        existed = False
    try:
        hold = service.hold_tickets(db, body.event_id, caller.uid, body.quantity, idempotency_key,
                                    deadline_s=answer_wait_s(), types=body.types, seats=body.seats)
    except AnswerPending as exc:
        keep_contact(request, caller)
        return pending(db, exc, f"/v1/holds/requests/{exc.request_id}")
    keep_contact(request, caller)
    response.headers["Location"] = f"/v1/holds/{hold.id}"
    if existed:
        response.headers["Idempotent-Replayed"] = "true"
    return HoldOut.of(hold)


@router.get("/requests/{request_id}", response_model=RequestOut, responses=responses(401, 404, 422))
def show_hold_request(request_id: RequestId, caller: SignedIn, db: Db, event_id: EventHint = None,
                      queued_at: QueuedAt = None) -> RequestOut:
    """A hold request of the signed-in user: `pending` (with its place in the queue, as for a
    purchase), or its answer (the hold, or the refusal)."""
    return request_out(db, request_id, caller.uid, event_id, queued_at)


@router.get("/{hold_id}", response_model=HoldOut, responses=responses(401, 404, 422))
def show_hold(hold_id: HoldId, caller: SignedIn, db: Db) -> HoldOut:
    """One of the signed-in user's holds (its status tells whether it is still active)."""
    return HoldOut.of(_own_hold(db, hold_id, caller.uid))


@router.post("/{hold_id}/confirm", status_code=201, response_model=OrderOut,
             responses=responses(401, 404, 409, 422, 429, 503))
def confirm_hold(hold_id: HoldId, caller: Throttled, db: Db, request: Request, response: Response) -> OrderOut:
    """Buy the held tickets: the hold becomes an order (at the event's current price).

    Confirming twice returns the same order with `Idempotent-Replayed: true`. An expired hold is a
    409 `hold_expired` (its tickets went back on sale), a released one 409 `hold_not_active`.
    """
    try:
        result = service.confirm_hold(db, hold_id, caller.uid)
    except NotAllowed:
        raise HoldNotFound(hold_id) from None
    keep_contact(request, caller)
    response.headers["Location"] = f"/v1/orders/{result.order.id}"
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return OrderOut.of(result.order)


@router.post("/{hold_id}/release", response_model=HoldOut,
             responses=responses(401, 404, 409, 422, 503))
def release_hold(hold_id: HoldId, caller: SignedIn, db: Db) -> HoldOut:
    """Give the held tickets back at once. Releasing an expired or released hold changes nothing;
    a confirmed one is a 409 `hold_not_active` (cancel the order instead)."""
    try:
        return HoldOut.of(service.release_hold(db, hold_id, caller.uid))
    except NotAllowed:
        raise HoldNotFound(hold_id) from None
