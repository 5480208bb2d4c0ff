"""Use case: the section documents of an event that no allocator is deciding.

While an allocator holds an event's lease it is the only writer that takes seats and the only
writer of the event's section documents (``services.allocator``): it frees seats given back
(the markers ``events/{e}/seat_releases/{id}``) in its in-memory seat book and rewrites their
sections. After the sale has closed, or whenever no allocator runs for the event, seats still
come back (a cancellation, a hold released or expired) and nobody would show them free.
``rewrite_released_sections`` does it in the allocator's stead, and only while the lease is
free:

- from the source of truth: the sections of the markers' seats are computed from the seat
  documents (read after the markers, so each marker's seats are already free in them);
- fenced on the lease document (``store.leases.stage_idle_fence``): the commit that writes the
  sections and deletes the markers also stamps the lease document, guarded by the version read
  while it was free, so an allocator that takes the lease meanwhile makes it fail as a whole and
  its own (newer) view is never overwritten; a new holder loads its seat book after taking the
  lease and rewrites every section with a taken seat anyway;
- at most one such write a second per event (the stamp, ``sections_at``, is read first), so a
  section document stays near Firestore's one sustained write a second;
- idempotent: two writers racing fail on the same precondition, and the loser reads again.

The release paths call it right after their commit (``services.cancellations``,
``services.holds``); ``sweep_released_sections`` runs on the hold sweeper's schedule and
catches what they left: a process that died after its commit, a release committed while a
retiring allocator still held the lease, a rewrite that lost its races.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from boxoffice.domain.seating import SeatBook
from boxoffice.log import kv
from boxoffice.store.documents import (
    SEAT_RELEASES,
    event_from_doc,
    event_ref,
    seat_releases_col,
    seats_col,
    section_ref,
)
from boxoffice.store.leases import IdleLease, read_idle_lease, stage_idle_fence

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0  # per event: Firestore's guideline of about one sustained write a second per document
RACES = 5
WRITTEN, ALLOCATOR, NOTHING, CONTENDED = "written", "allocator", "nothing", "contended"


@dataclass(frozen=True)
class SectionRewrite:
    """What a rewrite would commit: section id -> view (``SeatBook.section_view``), and the
    markers it accounts for (deleted in the same commit)."""

    event_id: str
    idle: IdleLease
    views: dict[str, dict[str, Any]]
    markers: list[str]


def plan_section_rewrite(db: firestore.Client, event_id: str) -> SectionRewrite | None:
    """Read what a rewrite needs; None while an allocator holds the lease (it does the work).
    No markers: an empty plan. Markers of an event gone or without a seat map: no views, the
    markers are only deleted."""
    idle = read_idle_lease(db, event_id)
    if idle is None:
        return None
    freed = {snap.id: [str(s) for s in (snap.to_dict() or {}).get("seats", ())]
             for snap in seat_releases_col(db, event_id).stream()}
    if not freed:
        return SectionRewrite(event_id, idle, {}, [])
    ev = event_ref(db, event_id).get()
    seat_map = event_from_doc(event_id, ev.to_dict() or {}).seat_map if ev.exists else None
    views: dict[str, dict[str, Any]] = {}
    if seat_map is not None:
        book = SeatBook(seat_map, [snap.id for snap in seats_col(db, event_id).select([]).stream()])
        sections = sorted({seat_map.section_of(s) for seats in freed.values() for s in seats})
        views = {section: book.section_view(section) for section in sections}
    return SectionRewrite(event_id, idle, views, sorted(freed))


def commit_section_rewrite(db: firestore.Client, plan: SectionRewrite) -> bool:
    """Write the planned sections and delete its markers in one commit fenced on the lease
    document; False (nothing written) when an allocator took the lease or another writer
    committed since the plan was read."""
    batch = db.batch()
    stage_idle_fence(db, batch, plan.idle)
    for section, view in plan.views.items():
        batch.set(section_ref(db, plan.event_id, section), view | {"updated_at": firestore.SERVER_TIMESTAMP})
    for marker in plan.markers:
        batch.delete(seat_releases_col(db, plan.event_id).document(marker))
    try:
        batch.commit()
    except (gexc.FailedPrecondition, gexc.Conflict, gexc.AlreadyExists):
        return False
    return True


def rewrite_released_sections(
    db: firestore.Client,
    event_id: str,
    *,
    min_interval_s: float = MIN_INTERVAL_S,
    races: int = RACES,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Show the seats given back of an event with no allocator as free (the module docstring).

    Returns ``written``, ``allocator`` (the lease holder frees them), ``nothing`` (no marker
    waits) or ``contended`` (lost ``races`` times: left to the next sweep). Waits at most
    ``min_interval_s`` per attempt for the event's last section write to be old enough."""
    for _ in range(races):
        plan = plan_section_rewrite(db, event_id)
        if plan is None:
            return ALLOCATOR
        if not plan.markers:
            return NOTHING
        wait = plan.idle.wait_s(min_interval_s)
        if wait > 0:
            sleep(wait)
            continue
        if commit_section_rewrite(db, plan):
            kv(log, logging.INFO, "sections.rewritten", event_id=event_id, sections=",".join(plan.views),
               markers=len(plan.markers))
            return WRITTEN
    return CONTENDED


def rewrite_after_release(db: firestore.Client, event_id: str) -> str | None:
    """For a release path, after its commit freed seats: never fails it (the commit stands; the
    sweep repairs what this leaves). The outcome, or None on a Firestore error."""
    try:
        return rewrite_released_sections(db, event_id)
    except gexc.GoogleAPICallError as exc:
        kv(log, logging.WARNING, "sections.rewrite_failed", event_id=event_id, error=str(exc)[:200])
        return None


def sweep_released_sections(db: firestore.Client) -> list[str]:
    """Rewrite the sections of every event whose seat releases wait with no allocator holding
    its lease; the events written. Reads every marker (they live about a second while an
    allocator runs, and until this sweep otherwise)."""
    events = sorted({snap.reference.parent.parent.id
                     for snap in db.collection_group(SEAT_RELEASES).select([]).stream()
                     if snap.reference.parent.parent is not None})
    return [e for e in events if rewrite_released_sections(db, e) == WRITTEN]
