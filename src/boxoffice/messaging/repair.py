"""Repair from the source of truth: committed changes whose effects are missing are sent again.

Every change that must have effects elsewhere (an order confirmed, an order cancelled, a
waitlist offer) writes its outbox message in the same commit as the change, so the outbox is
the committed record of what should have happened. Each subscription that handles a message
writes ``processed_messages/{subscription}--{messageId}`` in the same commit as its effect (the
analytics count, the email's "sent"), or gives up on it visibly (``message_failures`` marked
``dead_lettered``). So an effect is missing exactly when a published message of a type a
subscription handles has neither record.

That happens when the broker loses a message after accepting it: the Pub/Sub emulator keeps
messages in memory and a restart drops what was published and not yet delivered (issue 12,
finding 3); production Pub/Sub can lose a message whose subscription was deleted and
re-created. The relay cannot know: it was told "published". ``repair`` finds such messages and
marks them unpublished again (``published_at`` back to null, ``republished`` counted, the
subscriptions that missed it in ``repaired_for``), so the relay publishes them again with the
same message id; subscribers that already handled it (the other subscription, or a late
delivery) recognise the id and do nothing. Nothing is lost for good, nothing is done twice.

Bounded reads. A run reads outbox messages committed in ``[watermark, now - grace)`` oldest
first, at most ``limit``, plus one batched ``get_all`` of their processed and failure records.
``grace`` (60 s by default) leaves messages in flight alone, and a message republished within
``grace`` is not looked at again until it had its chance. The watermark (``ops/outbox-repair``)
moves to the oldest message still not settled (missing or in flight), or to the end of the
window when all are, so a run re-reads only what may still need it; it never lags more than
``lookback`` (6 h by default): older messages are left to `boxoffice messaging repair --since`.
A message the relay has not published yet is the relay's business, not repair's (it is counted
as in flight).

Where it runs: every 5 minutes as a Cloud Function in production (``repair_outbox`` in
messaging/cloud_functions.py), every ``BOXOFFICE_REPAIR_INTERVAL_S`` (30 s) as the worker's
``outbox-repair`` part locally, and by hand as `boxoffice messaging repair`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.log import kv
from boxoffice.messaging.topology import Topology
from boxoffice.store.documents import OUTBOX
from boxoffice.store.messaging import message_failure_ref, processed_ref, repair_state_ref

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 60.0
DEFAULT_LOOKBACK_S = 6 * 3600.0
DEFAULT_LIMIT = 1000
READ_BATCH = 500


@dataclass
class RepairResult:
    window_start: datetime
    window_end: datetime
    checked: int = 0
    in_flight: int = 0  # unpublished, or (re)published less than ``grace`` ago
    republished: list[str] = field(default_factory=list)
    missing: dict[str, int] = field(default_factory=dict)  # subscription -> messages it never handled
    watermark: datetime | None = None
    full: bool = False  # hit ``limit``: run again for the rest

    def as_dict(self) -> dict[str, Any]:
        return {"window_start": self.window_start.isoformat(), "window_end": self.window_end.isoformat(),
                "checked": self.checked, "in_flight": self.in_flight, "republished": len(self.republished),
                "republished_ids": self.republished[:20], "missing": self.missing,
                "watermark": self.watermark.isoformat() if self.watermark else None, "full": self.full}


def _missing_subscriptions(db: firestore.Client, doc: dict[str, Any], message_id: str, topology: Topology,
                           records: dict[str, dict[str, Any]]) -> list[str]:
    missing = []
    for spec in topology.subscriptions:
        if doc.get("type") not in spec.types:
            continue
        handled = processed_ref(db, spec.name, message_id).path in records
        dead = (records.get(message_failure_ref(db, spec.name, message_id).path) or {}).get("dead_lettered")
        if not handled and not dead:
            missing.append(spec.name)
    return missing


def repair(db: firestore.Client, topology: Topology, *, now: datetime | None = None,
           grace_s: float = DEFAULT_GRACE_S, lookback_s: float = DEFAULT_LOOKBACK_S,
           since: datetime | None = None, limit: int = DEFAULT_LIMIT, dry_run: bool = False) -> RepairResult:
    """Find published outbox messages that a subscription never handled and mark them for the
    relay to publish again. ``since`` overrides the watermark (an operator reaching further
    back); ``dry_run`` reports without changing anything."""
    now = now or datetime.now(UTC)
    end = now - timedelta(seconds=grace_s)
    floor = now - timedelta(seconds=lookback_s)
    state = repair_state_ref(db).get().to_dict() or {}
    mark = state.get("watermark")
    start = since or (max(mark, floor) if isinstance(mark, datetime) else floor)
    result = RepairResult(start, end)
    if start >= end:
        result.watermark = mark if isinstance(mark, datetime) else None
        return result
    snaps = list(db.collection(OUTBOX).where(filter=FieldFilter("created_at", ">=", start))
                 .where(filter=FieldFilter("created_at", "<", end)).order_by("created_at").limit(limit).stream())
    result.checked, result.full = len(snaps), len(snaps) == limit
    records = _records(db, topology, snaps)
    unsettled: list[datetime] = []
    batch = db.batch()
    for snap in snaps:
        doc = snap.to_dict() or {}
        published = doc.get("published_at")
        if not isinstance(published, datetime) or published > end:
            result.in_flight += 1
            unsettled.append(doc["created_at"])
            continue
        missing = _missing_subscriptions(db, doc, snap.id, topology, records)
        if not missing:
            continue
        unsettled.append(doc["created_at"])
        result.republished.append(snap.id)
        for name in missing:
            result.missing[name] = result.missing.get(name, 0) + 1
        batch.update(snap.reference, {"published_at": None, "republished": firestore.Increment(1),
                                      "republished_at": firestore.SERVER_TIMESTAMP, "repaired_for": missing})
    if snaps and result.full:
        last = (snaps[-1].to_dict() or {})["created_at"]
        result.watermark = min(unsettled, default=last)
    else:
        result.watermark = min(unsettled, default=end)
    if dry_run:
        return result
    batch.set(repair_state_ref(db), {"watermark": result.watermark, "ran_at": firestore.SERVER_TIMESTAMP,
                                     "last": result.as_dict()})
    batch.commit()  # the republish marks and the watermark: all or nothing
    if result.republished:
        kv(log, logging.WARNING, "outbox.repaired", republished=len(result.republished), missing=result.missing,
           first=result.republished[0])
    return result


def _records(db: firestore.Client, topology: Topology, snaps: list[Any]) -> dict[str, dict[str, Any]]:
    """The processed and failure records of these messages that exist, by path, read in
    batches (one round trip per ``READ_BATCH`` documents)."""
    refs = []
    for snap in snaps:
        kind = (snap.to_dict() or {}).get("type")
        for spec in topology.subscriptions:
            if kind in spec.types:
                refs += [processed_ref(db, spec.name, snap.id), message_failure_ref(db, spec.name, snap.id)]
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(refs), READ_BATCH):
        for found in db.get_all(refs[i:i + READ_BATCH]):
            if found.exists:
                out[found.reference.path] = found.to_dict() or {}
    return out
