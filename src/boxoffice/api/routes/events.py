"""Events: organisers create and change them; anyone lists and shows published ones.

A draft is its organiser's alone (``Event.visible_to``, the policy ``firestore.rules`` also
states): anyone else is answered as for a missing event, and the public list leaves drafts out.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from boxoffice.api.deps import Db, MaybeSignedIn, Organiser
from boxoffice.api.problems import responses
from boxoffice.api.schemas import (
    ID_PATTERN,
    MAX_PAGE,
    Availability,
    EventIn,
    EventOut,
    EventPage,
    EventPatch,
)
from boxoffice.domain.model import SaleStatus
from boxoffice.services import events as service

router = APIRouter(prefix="/v1/events", tags=["events"])
EventId = Annotated[str, Path(pattern=ID_PATTERN)]


@router.post("", status_code=201, response_model=EventOut,
             responses=responses(401, 403, 413, 422))
def create_event(body: EventIn, caller: Organiser, db: Db, response: Response) -> EventOut:
    """Create an event and its inventory. The caller (an organiser) becomes its owner."""
    data = body.model_dump(exclude={"on_sale", "types", "seats"})
    event = service.create_event(
        db, **data, status=SaleStatus.ON_SALE if body.on_sale else SaleStatus.DRAFT,
        organiser_id=caller.uid,
        types=body.types.model_dump(exclude_none=True) if body.types is not None else None,
        seats=body.seats.model_dump() if body.seats is not None else None,
    )
    response.headers["Location"] = f"/v1/events/{event.id}"
    return EventOut.of(event, Availability.unsold(event))


@router.get("", response_model=EventPage, responses=responses(404, 422))
def list_events(
    db: Db,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")] = 20,
    after: Annotated[str | None, Query(pattern=ID_PATTERN, description="Cursor from `next`.")] = None,
) -> EventPage:
    """Published events (not drafts) by start time. Availability here is the display summary
    (may lag a little)."""
    rows = service.list_events(db, limit=limit, start_after=after, published_only=True)
    return EventPage.of(rows, limit)


@router.get("/{event_id}", response_model=EventOut, responses=responses(401, 404, 422))
def show_event(event_id: EventId, db: Db, caller: MaybeSignedIn) -> EventOut:
    """One event. Availability is the display summary (one read, may lag a few seconds,
    `live: false`); the event's organiser gets it counted from the inventory shards (`live: true`).
    A draft is shown to its organiser only."""
    event, summary = service.show_event(db, event_id, caller.uid if caller else None)
    if caller is not None and caller.uid == event.organiser_id:
        return EventOut.counted(db, event)
    return EventOut.of(event, Availability.of_summary(event, summary))


@router.patch("/{event_id}", response_model=EventOut,
              responses=responses(401, 403, 404, 413, 422, 503))
def update_event(event_id: EventId, body: EventPatch, caller: Organiser, db: Db) -> EventOut:
    """Change an event's details. Only the organiser who created it may."""
    event = service.update_event(db, event_id, caller.uid, body.model_dump(exclude_unset=True, exclude_none=True))
    _, summary = service.get_event(db, event_id)
    return EventOut.of(event, Availability.of_summary(event, summary))
