"""Use case: the figures an organiser watches during a sale, beyond the availability summary.

Counted with Firestore aggregation queries (``count()``), so a sale of thousands of orders costs
a handful of index reads, not thousands of document reads:

    emails            emails/{messageId} of the event by status (sent, skipped, failed, sending)
    dead letters      message_failures/{...} of the event marked dead_lettered (a subscriber gave
                      up after its attempts), and trigger_failures/{...} of the event not resolved
                      (an inventory change whose summary refresh failed every attempt)
    queue             answers of the admission queue over the last ``QUEUE_WINDOW_S``: how many, and
                      the latency from a request's arrival in the queue to its answer (p50, p99),
                      read from the allocator's answer documents ``requests/{id}`` (arrived_at,
                      answered_at); None while the event has none (purchases answered directly).
                      Its length, the oldest wait and the answer rate are estimated from the
                      allocator's progress on its lease (domain/queue_progress.py: one read);
                      Pub/Sub itself counts no backlog that the emulator would show (in
                      production: Cloud Monitoring's num_undelivered_messages, a minute late).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain.queue_progress import backlog
from boxoffice.store.documents import TRIGGER_FAILURES
from boxoffice.store.leases import read_queue_progress
from boxoffice.store.messaging import EMAILS, FAILURES

EMAIL_STATES = ("sent", "skipped", "failed", "sending")
REQUESTS = "requests"  # the allocator's answer documents (store.requests)
QUEUE_WINDOW_S = 30
QUEUE_SAMPLE = 2000


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


def queue_figures(db: firestore.Client, event_id: str, now: datetime | None = None) -> dict[str, Any] | None:
    """The admission queue: {length (about how many wait), oldest_wait_s (at most), allocator (one
    holds the queue), answers_per_s, answered, window_s, answer_p50_ms, answer_p99_ms} (the
    estimates are None while unknown); None when the event has no allocator and no answer yet."""
    requests = _of_event(db, REQUESTS, event_id)
    progress = read_queue_progress(db, event_id)
    if progress is None and not list(requests.limit(1).select([]).stream()):
        return None
    now = now or datetime.now(UTC)
    since = now - timedelta(seconds=QUEUE_WINDOW_S)
    recent = (requests.where(filter=FieldFilter("answered_at", ">=", since))
              .select(["arrived_at", "answered_at"]).limit(QUEUE_SAMPLE).stream())
    waits = sorted((doc.get("answered_at") - doc.get("arrived_at")).total_seconds() * 1000
                   for doc in recent if doc.get("arrived_at") and doc.get("answered_at"))

    def pct(q: float) -> float | None:
        return round(waits[min(len(waits) - 1, int(q * (len(waits) - 1) + 0.5))], 1) if waits else None

    length, oldest_wait_s = backlog(progress, now)
    return {"length": length, "oldest_wait_s": oldest_wait_s, "allocator": progress is not None and progress.live,
            "answers_per_s": None if progress is None else round(progress.answers_per_s, 1),
            "answered": len(waits), "window_s": QUEUE_WINDOW_S,
            "answer_p50_ms": pct(0.5), "answer_p99_ms": pct(0.99)}


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
