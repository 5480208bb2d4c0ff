"""The inventory trigger: a write to ``events/{e}/inventory/{shard}`` refreshes the event summary.

``handle_inventory_change`` is a plain function of one change, called by the Cloud Function
(``functions/main.py``) and by the local worker (``runtime/inventory_loop.py``) alike.
``deliver`` wraps it with the shared failure policy: attempts with exponential backoff and
full jitter, then a dead letter in ``trigger_failures/{changeId}`` that an operator lists
(``boxoffice triggers failures``) and that ``reconcile_event`` (``boxoffice events reconcile``,
and the scheduled ``reconcile_inventory`` function) repairs by recomputing the summary.

Because the handler recomputes the summary from all shards, any later successful change of
the same event also repairs a missed one; reconciliation covers the last change of a sale.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain.availability import DEFAULT_MIN_INTERVAL_S, same_counts
from boxoffice.log import kv
from boxoffice.retry import Backoff
from boxoffice.services.summary import (
    DEFERRED,
    UNCHANGED,
    SummaryOutcome,
    refresh_summary,
    wait_for_summary,
)
from boxoffice.store.documents import TRIGGER_FAILURES, trigger_failure_ref

log = logging.getLogger(__name__)

DEFAULT_ATTEMPTS = 5
DEFAULT_BACKOFF = Backoff(base_s=0.2, cap_s=5.0)


@dataclass(frozen=True)
class InventoryChange:
    """One write to an inventory shard document, as a trigger or a listener sees it."""

    event_id: str
    shard_id: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    change_id: str
    change_time: datetime | None  # the write's commit time (the new ``update_time``)


def change_id_for(event_id: str, shard_id: str, update_time: datetime | None) -> str:
    """A stable id for a change seen by a listener (a Cloud Function uses its CloudEvent id)."""
    micros = int(update_time.timestamp() * 1_000_000) if update_time else 0
    return f"{event_id}.{shard_id}.{micros}"


def handle_inventory_change(
    db: firestore.Client,
    event_id: str,
    shard_id: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    *,
    change_id: str,
    change_time: datetime | None = None,
    min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
    wait: bool = True,
    lead_s: float = 0.0,
) -> SummaryOutcome:
    """Make the event's summary reflect this shard change (and raise its notices).

    Idempotent and order-free: the summary is recomputed from all shards and records the
    snapshot time it reflects, so a change already reflected (a duplicate, or a change
    overtaken by a later one) writes nothing. A change that does not touch the counts writes
    nothing. With ``wait=True`` (a Cloud Function) it waits out the event document's write
    interval; with ``wait=False`` (the worker, which coalesces itself) it returns ``DEFERRED``
    and its ``wait_s``. Errors propagate: the caller's policy (``deliver``) retries.
    """
    if same_counts(before, after):
        return SummaryOutcome(UNCHANGED)
    if wait:
        outcome = wait_for_summary(db, event_id, change_time=change_time, min_interval_s=min_interval_s)
    else:
        outcome = refresh_summary(db, event_id, change_time=change_time, min_interval_s=min_interval_s,
                                  lead_s=lead_s)
    kv(log, logging.DEBUG, "inventory.change", change_id=change_id, event_id=event_id, shard_id=shard_id,
       result=outcome.result)
    return outcome


Handler = Callable[..., SummaryOutcome]


def deliver(
    db: firestore.Client,
    change: InventoryChange,
    *,
    handler: Handler = handle_inventory_change,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: Backoff = DEFAULT_BACKOFF,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    **handler_kwargs: Any,
) -> SummaryOutcome | None:
    """Run ``handler`` on ``change`` with retries; dead-letter it after the last failed attempt.

    Returns the handler's outcome, or None when the change was dead-lettered (recorded in
    ``trigger_failures`` with its error). Only if the dead letter itself cannot be written does
    an error propagate (the worker then keeps the change pending; a Cloud Function logs it).
    """
    rng = rng or random.Random()
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        try:
            return handler(db, change.event_id, change.shard_id, change.before, change.after,
                           change_id=change.change_id, change_time=change.change_time, **handler_kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure is retried, then recorded
            last = exc
            kv(log, logging.WARNING, "inventory.change_failed", change_id=change.change_id, event_id=change.event_id,
               attempt=attempt, error=f"{type(exc).__name__}: {exc}")
            if attempt < attempts:
                sleep(backoff.delay(attempt, rng))
    assert last is not None
    record_failure(db, change, last, attempts)
    return None


def record_failure(db: firestore.Client, change: InventoryChange, error: BaseException, attempts: int) -> None:
    """Write the dead letter (idempotent: one document per change id)."""
    trigger_failure_ref(db, change.change_id).set({
        "change_id": change.change_id,
        "event_id": change.event_id,
        "shard_id": change.shard_id,
        "change_time": change.change_time,
        "error": f"{type(error).__name__}: {error}",
        "traceback": "".join(traceback.format_exception(error))[-4000:],
        "attempts": attempts,
        "failed_at": firestore.SERVER_TIMESTAMP,
        "resolved": False,
    })
    kv(log, logging.ERROR, "inventory.change_dead", change_id=change.change_id, event_id=change.event_id,
       error=f"{type(error).__name__}: {error}")


def list_failures(db: firestore.Client, *, include_resolved: bool = False, limit: int = 100) -> list[dict[str, Any]]:
    """Dead-lettered changes, newest first (unresolved only by default)."""
    query: Any = db.collection(TRIGGER_FAILURES)
    if not include_resolved:
        query = query.where(filter=FieldFilter("resolved", "==", False))
    rows = [s.to_dict() | {"id": s.id} for s in query.limit(limit).stream()]
    return sorted(rows, key=lambda r: r.get("failed_at") or datetime.min, reverse=True)


def reconcile_event(db: firestore.Client, event_id: str) -> SummaryOutcome:
    """Recompute the event's summary from its shards now, and resolve its dead letters.

    Safe at any time: the write is guarded like every summary write, and a summary is a
    function of the shards, so reconciling twice gives the same result.
    """
    outcome = refresh_summary(db, event_id, force=True)
    resolve_failures(db, event_id)
    kv(log, logging.INFO, "inventory.reconciled", event_id=event_id, available=(outcome.summary or {}).get("available"))
    return outcome


def resolve_failures(db: firestore.Client, event_id: str) -> int:
    """Mark the event's open dead letters resolved (a summary written after them reflects them)."""
    failures = (db.collection(TRIGGER_FAILURES).where(filter=FieldFilter("event_id", "==", event_id))
                .where(filter=FieldFilter("resolved", "==", False)).stream())
    n = 0
    for snap in failures:
        snap.reference.update({"resolved": True, "resolved_at": firestore.SERVER_TIMESTAMP})
        n += 1
    return n


def reconcile_failures(db: firestore.Client) -> list[str]:
    """Reconcile every event with an unresolved dead letter; the event ids repaired."""
    events = sorted({f["event_id"] for f in list_failures(db, limit=500)})
    for event_id in events:
        reconcile_event(db, event_id)
    return events


__all__ = [
    "DEFERRED",
    "InventoryChange",
    "change_id_for",
    "deliver",
    "handle_inventory_change",
    "list_failures",
    "reconcile_event",
    "reconcile_failures",
    "resolve_failures",
]
