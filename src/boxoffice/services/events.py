"""Use cases of an organiser: create an event, list events, show one."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from google.cloud import firestore

from boxoffice.domain.model import Event, InventoryShard, SaleStatus, new_event
from boxoffice.store import events as store
from boxoffice.store.documents import event_from_doc
from boxoffice.store.purchases import ROUTER


def create_event(
    db: firestore.Client,
    *,
    name: str,
    venue: str,
    starts_at: datetime,
    price: int,
    currency: str,
    capacity: int,
    per_order_max: int = 10,
    per_user_limit: int | None = None,
    shard_count: int | None = None,
    hold_minutes: int = 10,
    low_stock_threshold: int | None = None,
    status: SaleStatus = SaleStatus.ON_SALE,
    event_id: str | None = None,
) -> Event:
    """Validate and create an event with its inventory shards in one commit."""
    event = new_event(
        event_id=event_id or f"ev_{secrets.token_hex(6)}",
        name=name,
        venue=venue,
        starts_at=starts_at,
        price=price,
        currency=currency,
        capacity=capacity,
        per_order_max=per_order_max,
        per_user_limit=per_user_limit,
        shard_count=shard_count,
        status=status,
        hold_minutes=hold_minutes,
        low_stock_threshold=low_stock_threshold,
        now=datetime.now(UTC),
    )
    store.insert_event(db, event)
    ROUTER.learn_event(event)
    return event


def get_event(db: firestore.Client, event_id: str) -> tuple[Event, dict[str, Any]]:
    """The event and its availability summary (which may lag the shards by a few seconds)."""
    doc = store.load_event_document(db, event_id)
    return event_from_doc(event_id, doc), doc.get("summary", {})


def list_events(
    db: firestore.Client, *, limit: int = 50, start_after: str | None = None
) -> list[tuple[Event, dict[str, Any]]]:
    return store.query_events(db, limit=limit, start_after=start_after)


def inventory(db: firestore.Client, event_id: str) -> list[InventoryShard]:
    """The authoritative shard counts."""
    return sorted(store.load_shards(db, event_id), key=lambda s: s.id)
