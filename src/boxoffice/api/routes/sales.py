"""An organiser during a sale: release more tickets, pause, resume or close the sale.

Only the organiser of the event (its `organiser_id`, with the `organiser` claim) may; another
organiser gets 403 `not_event_organiser`, a buyer 403 `not_an_organiser`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from boxoffice.api.deps import Db, Organiser
from boxoffice.api.problems import responses
from boxoffice.api.schemas import ID_PATTERN, EventOut, ReleaseIn, SaleStatusIn
from boxoffice.services import releases as service

router = APIRouter(prefix="/v1/events/{event_id}", tags=["sales"])
EventId = Annotated[str, Path(pattern=ID_PATTERN)]


@router.post("/releases", status_code=201, response_model=EventOut,
             responses=responses(401, 403, 404, 409, 413, 422, 503))
def release_tickets(event_id: EventId, body: ReleaseIn, caller: Organiser, db: Db) -> EventOut:
    """Add tickets to the event's inventory (a sold-out event goes back on sale and its waitlist
    is offered them). Not idempotent: every call adds tickets. A closed sale is a 409."""
    event = service.release_tickets(db, event_id, body.quantity, organiser_id=caller.uid, type_id=body.type_id)
    return EventOut.counted(db, event)


@router.put("/sale-status", response_model=EventOut,
            responses=responses(401, 403, 404, 409, 413, 422, 503))
def set_sale_status(event_id: EventId, body: SaleStatusIn, caller: Organiser, db: Db) -> EventOut:
    """Pause, resume (`on_sale`, also how a draft goes on sale) or close (final) the sale.

    While not on sale, purchases and new holds are refused; holds taken before a pause can still
    be confirmed until the sale closes. Asking for the current status changes nothing; a closed
    sale cannot reopen (409 `invalid_sale_transition`).
    """
    event = service.set_sale_status(db, event_id, body.status, organiser_id=caller.uid)
    return EventOut.counted(db, event)
