"""What an organiser's live sale dashboard polls: emails, dead letters, the admission queue.

Availability itself is not here: the page listens to the event document's summary through
Firestore (under firestore.rules) and draws sold / held / available over time from it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from boxoffice.api.deps import Db, Organiser
from boxoffice.api.problems import ApiProblem, responses
from boxoffice.api.schemas import ID_PATTERN, SaleFiguresOut
from boxoffice.messaging.analytics import read_stats
from boxoffice.services import events
from boxoffice.services.sale_figures import sale_figures

router = APIRouter(prefix="/v1/events/{event_id}", tags=["sales"])
EventId = Annotated[str, Path(pattern=ID_PATTERN)]


@router.get("/dashboard", response_model=SaleFiguresOut, responses=responses(401, 403, 404, 422))
def sale_dashboard(event_id: EventId, caller: Organiser, db: Db) -> SaleFiguresOut:
    """The event's sale figures for its organiser (any organiser for an event created by an
    operator tool, which has no `organiser_id`): emails by state, dead letters, sales analytics,
    and the admission queue when purchases go through one (`queue` null otherwise)."""
    event, _ = events.show_event(db, event_id, caller.uid)  # another's draft: not found
    if event.organiser_id is not None and event.organiser_id != caller.uid:
        raise ApiProblem(403, "not_event_organiser",
                         f"only the organiser of event {event_id!r} may see its sale figures")
    figures = sale_figures(db, event_id)
    stats = read_stats(db, event_id)
    return SaleFiguresOut(event_id=event_id, emails=figures.emails, dead_letters=figures.dead_letters,
                          queue=figures.queue, queue_note=figures.queue_note,
                          tickets_sold=stats.tickets_sold, tickets_cancelled=stats.tickets_cancelled,
                          orders=stats.orders, revenue=stats.revenue, per_minute=stats.per_minute,
                          types=stats.types)
