"""Cloud Functions for Firebase (production) for inventory: thin wrappers over the handlers.

- ``on_inventory_written``: every write to ``events/{eventId}/inventory/{shardId}`` runs the
  same ``deliver(handle_inventory_change)`` as the local worker (retries with backoff and
  jitter inside the invocation, then a dead letter in ``trigger_failures``).
- ``reconcile_inventory``: every minute, sweep expired holds, rewrite the sections of seats given
  back while no allocator held their event's lease (``services.sections``), and recompute the
  summary of each event with an unresolved dead letter.

The Python SDK cannot ask Eventarc to retry a failed Firestore trigger
(firebase/firebase-functions-python#165), so no change may depend on a redelivery: the
handler retries in-process, a failure that survives is recorded and reconciled on schedule,
and since every summary is recomputed from all shards, any later change repairs it too.

Imported by functions/main.py; importing this module needs firebase_functions (deploy only).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from firebase_functions import firestore_fn, scheduler_fn
from firebase_functions.core import Change
from google.cloud.firestore_v1 import DocumentSnapshot

from boxoffice.runtime import root
from boxoffice.services.holds import release_expired_holds
from boxoffice.services.sections import sweep_released_sections
from boxoffice.triggers.inventory import InventoryChange, deliver, reconcile_failures


def _as_datetime(ts: Any) -> datetime | None:
    if ts is None:
        return None
    if isinstance(ts, datetime):
        return ts
    converted: datetime = ts.ToDatetime(tzinfo=UTC)  # protobuf Timestamp
    return converted


@firestore_fn.on_document_written(document="events/{eventId}/inventory/{shardId}", timeout_sec=120)
def on_inventory_written(event: firestore_fn.Event[Change[DocumentSnapshot[Any] | None]]) -> None:
    before = event.data.before
    after = event.data.after
    change = InventoryChange(
        event_id=event.params["eventId"],
        shard_id=event.params["shardId"],
        before=before.to_dict() if before is not None else None,
        after=after.to_dict() if after is not None else None,
        change_id=event.id,
        change_time=_as_datetime(after.update_time) if after is not None else None,
    )
    deliver(root.cloud().firestore(), change)  # waits out the 1 s write interval, then writes or finds it done


@scheduler_fn.on_schedule(schedule="every 1 minutes")
def reconcile_inventory(event: scheduler_fn.ScheduledEvent) -> None:
    db = root.cloud().firestore()
    release_expired_holds(db)
    sweep_released_sections(db)
    reconcile_failures(db)
