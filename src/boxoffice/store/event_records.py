"""Events and their inventory shards in Firestore."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain.errors import EventNotFound
from boxoffice.domain.model import Event, InventoryShard, initial_shards
from boxoffice.store.documents import (
    EVENTS,
    event_from_doc,
    event_ref,
    event_to_doc,
    inventory_col,
    shard_from_doc,
    shard_ref,
    shard_to_doc,
)


def initial_summary(capacity: int, status: str) -> dict[str, Any]:
    return {
        "available": capacity,
        "held": 0,
        "sold": 0,
        "capacity": capacity,
        "state": "sold_out" if capacity == 0 else status,
        "updated_at": firestore.SERVER_TIMESTAMP,
    }


def insert_event(db: firestore.Client, event: Event) -> None:
    """Write the event and all its shards in one atomic commit (at most 201 writes)."""
    batch = db.batch()
    _stage_event(db, batch, event)
    batch.commit()


def insert_events(db: firestore.Client, events: list[Event]) -> None:
    """Write many small events, as few commits as Firestore's 500 writes a commit allow.

    Each event is still all-or-nothing: its documents never straddle two commits.
    """
    batch, writes = db.batch(), 0
    for event in events:
        size = 1 + event.shard_count
        if writes + size > 500:
            batch.commit()
            batch, writes = db.batch(), 0
        _stage_event(db, batch, event)
        writes += size
    if writes:
        batch.commit()


def _stage_event(db: firestore.Client, batch: firestore.WriteBatch, event: Event) -> None:
    doc = event_to_doc(event)
    doc["summary"] = initial_summary(event.capacity, event.status.value)
    batch.create(event_ref(db, event.id), doc)
    for shard in initial_shards(event):
        batch.create(shard_ref(db, event.id, shard.id), shard_to_doc(shard))


def load_event(db: firestore.Client, event_id: str) -> Event:
    snap = event_ref(db, event_id).get()
    if not snap.exists:
        raise EventNotFound(event_id)
    return event_from_doc(event_id, snap.to_dict() or {})


def load_event_document(db: firestore.Client, event_id: str) -> dict[str, Any]:
    """The raw event document, summary included (for display)."""
    snap = event_ref(db, event_id).get()
    if not snap.exists:
        raise EventNotFound(event_id)
    return snap.to_dict() or {}


def event_snapshot(db: firestore.Client, event_id: str) -> firestore.DocumentSnapshot[Any]:
    snap = event_ref(db, event_id).get()
    if not snap.exists:
        raise EventNotFound(event_id)
    return snap


def update_event_fields(
    db: firestore.Client, event_id: str, fields: dict[str, Any], read_at: Any
) -> None:
    """Write ``fields`` only if the event document is unchanged since ``read_at``
    (raises ``google.api_core.exceptions.FailedPrecondition`` otherwise)."""
    event_ref(db, event_id).update(
        dict(fields), option=db.write_option(last_update_time=read_at)
    )


def load_shards(db: firestore.Client, event_id: str) -> list[InventoryShard]:
    return [shard_from_doc(s.id, s.to_dict() or {}) for s in inventory_col(db, event_id).stream()]


def query_events(
    db: firestore.Client, *, limit: int = 50, start_after: str | None = None,
    statuses: Sequence[str] | None = None,
) -> list[tuple[Event, dict[str, Any]]]:
    """Events by start time, then id; cursor-paginated by the last event id seen.

    ``statuses``: only events in one of them (index events(status, starts_at)); a cursor naming
    an event outside them is unknown (``EventNotFound``), as it would be to such a reader.
    """
    query = db.collection(EVENTS).order_by("starts_at")
    if statuses is not None:
        query = query.where(filter=FieldFilter("status", "in", list(statuses)))
    query = query.order_by("__name__").limit(limit)
    if start_after is not None:
        cursor = event_ref(db, start_after).get()
        if not cursor.exists or (statuses is not None and (cursor.to_dict() or {}).get("status") not in statuses):
            raise EventNotFound(start_after)
        query = query.start_after(cursor)
    out = []
    for snap in query.stream():
        doc = snap.to_dict() or {}
        out.append((event_from_doc(snap.id, doc), doc.get("summary", {})))
    return out
