"""Use case: the figures an organiser watches during a sale, beyond the availability summary.

Counted with Firestore aggregation queries (``count()``), so a sale of thousands of orders costs
a handful of index reads, not thousands of document reads:

    emails            emails/{messageId} of the event by status (sent, skipped, failed, sending)
    dead letters      message_failures/{...} of the event marked dead_lettered (a subscriber gave
                      up after its attempts), and trigger_failures/{...} of the event not resolved
                      (an inventory change whose summary refresh failed every attempt)
    queue             the admission queue's length and answer latency, when the purchase path has
                      one (``queue_figures``); None otherwise
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.store.documents import TRIGGER_FAILURES
from boxoffice.store.messaging import EMAILS, FAILURES
from boxoffice.store.requests import REQUESTS

EMAIL_STATES = ("sent", "skipped", "failed", "sending")


@dataclass(frozen=True)
class SaleFigures:
    event_id: str
    emails: dict[str, int]
    dead_letters: dict[str, int]
    queue: dict[str, Any] | None
    queue_note: str | None


def _count(query: Any) -> int:
    result = query.count().get()
    return int(result[0][0].value) if result and result[0] else 0


def _of_event(db: firestore.Client, collection: str, event_id: str) -> Any:
    return db.collection(collection).where(filter=FieldFilter("event_id", "==", event_id))


RECENT_ANSWERS = 500


def queue_figures(db: firestore.Client, event_id: str) -> dict[str, Any] | None:
    """The admission queue of the event, from its answer documents: {answered, length,
    answer_p50_ms, answer_p99_ms} (latency from the queue's arrival to the allocator's commit,
    over the latest answers), or None when no request of the event was answered yet.
    ``length`` (waiting requests) is Pub/Sub's backlog metric (Cloud Monitoring), not known here:
    None."""
    answers = _of_event(db, REQUESTS, event_id)
    answered = _count(answers)
    if not answered:
        return None
    recent = answers.order_by("answered_at", direction=firestore.Query.DESCENDING).limit(RECENT_ANSWERS)
    waits = sorted(
        (d["answered_at"] - d["arrived_at"]).total_seconds() * 1000
        for d in (s.to_dict() or {} for s in recent.stream())
        if d.get("answered_at") and d.get("arrived_at")
    )

    def at(q: float) -> float | None:
        return round(waits[min(len(waits) - 1, int(q * len(waits)))], 1) if waits else None

    return {"answered": answered, "length": None, "answer_p50_ms": at(0.5), "answer_p99_ms": at(0.99)}


def sale_figures(db: firestore.Client, event_id: str) -> SaleFigures:
    emails = {state: _count(_of_event(db, EMAILS, event_id).where(filter=FieldFilter("status", "==", state)))
              for state in EMAIL_STATES}
    dead = {
        "messages": _count(_of_event(db, FAILURES, event_id).where(filter=FieldFilter("dead_lettered", "==", True))),
        "inventory_changes": _count(_of_event(db, TRIGGER_FAILURES, event_id)
                                    .where(filter=FieldFilter("resolved", "==", False))),
    }
    queue = queue_figures(db, event_id)
    note = None if queue is not None else "no request of this event was answered yet"
    return SaleFigures(event_id=event_id, emails={"sent": emails["sent"], "skipped": emails["skipped"],
                                                  "failed": emails["failed"], "pending": emails["sending"]},
                       dead_letters=dead, queue=queue, queue_note=note)
