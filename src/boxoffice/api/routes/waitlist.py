"""The waitlist of a sold-out event: join it, leave it. The user is always the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from boxoffice.api.deps import Db, SignedIn, keep_contact
from boxoffice.api.problems import responses
from boxoffice.api.schemas import ID_PATTERN, TYPE_ID_PATTERN, WaitlistLeft, WaitlistOut
from boxoffice.services import waitlist as service

router = APIRouter(prefix="/v1/events/{event_id}/waitlist", tags=["waitlist"])
EventId = Annotated[str, Path(pattern=ID_PATTERN)]


@router.put("", response_model=WaitlistOut, responses=responses(401, 404, 409, 422))
def join_waitlist(
    event_id: EventId, caller: SignedIn, db: Db, request: Request,
    type_id: Annotated[str | None, Query(pattern=TYPE_ID_PATTERN, description=(
        "The ticket type to wait for: required for an event with ticket types."))] = None,
) -> WaitlistOut:
    """Wait for returned tickets of a sold-out event, or of a sold-out ticket type (`?type_id=`,
    required for an event with types); joining again keeps your place.

    Only while no ticket (of the type) is available: otherwise 409 `not_sold_out` (buy instead).
    When tickets (of the type) come back, the first in line are emailed an offer; an offer does
    not reserve a ticket.
    """
    entry = service.join_waitlist(db, event_id, caller.uid, type_id)
    keep_contact(request, caller)
    return WaitlistOut.of(entry)


@router.delete("", response_model=WaitlistLeft, responses=responses(401, 404, 422))
def leave_waitlist(event_id: EventId, caller: SignedIn, db: Db) -> WaitlistLeft:
    """Leave the waitlist; leaving when not on it is harmless (`was_waiting: false`)."""
    was = service.leave_waitlist(db, event_id, caller.uid)  # an unknown event (or a draft): 404
    return WaitlistLeft(event_id=event_id, user_id=caller.uid, was_waiting=was)
