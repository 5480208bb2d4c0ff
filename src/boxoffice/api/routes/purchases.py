"""Buying tickets, exactly once per Idempotency-Key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from boxoffice.api.deps import Db, Throttled, keep_contact
from boxoffice.api.problems import ApiProblem, responses
from boxoffice.api.schemas import OrderOut, PurchaseIn
from boxoffice.services.purchasing import purchase_tickets

router = APIRouter(prefix="/v1", tags=["purchases"])

KEY_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"


@router.post("/purchases", status_code=201, response_model=OrderOut,
             responses=responses(401, 404, 409, 413, 422, 428, 429, 503))
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
) -> OrderOut:
    """Buy tickets for the signed-in user.

    The same key (for the same user) returns the first order with the same status and body, and
    the header `Idempotent-Replayed: true`; the same key with another event or quantity is a 409.
    A refusal (sold out, limit) writes nothing, so retrying a refused key may later succeed.
    Rate-limited per user and per client address (429 with `Retry-After`).
    """
    if idempotency_key is None:
        raise ApiProblem(428, "idempotency_key_required",
                         "send an Idempotency-Key header (a new random value per purchase) so that "
                         "a retried request cannot buy twice")
    result = purchase_tickets(db, body.event_id, caller.uid, body.quantity, idempotency_key)
    keep_contact(request, caller)
    response.headers["Location"] = f"/v1/orders/{result.order.id}"
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return OrderOut.of(result.order)
