"""Use cases of an organiser: create an event, list events, show one."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from boxoffice.domain.availability import Summary, compute_summary
from boxoffice.domain.errors import ContentionTimeout, InvalidRequest, InvalidSaleWindow
from boxoffice.domain.model import Event, InventoryShard, SaleStatus, new_event
from boxoffice.domain.seating import seat_map_from_json
from boxoffice.domain.ticket_types import TypeSpec, type_specs_from_json
from boxoffice.store import event_records as store
from boxoffice.store.documents import event_from_doc


def create_event(
    db: firestore.Client,
    *,
    name: str,
    venue: str,
    starts_at: datetime,
    price: int | None = None,
    currency: str = "EUR",
    capacity: int | None = None,
    per_order_max: int = 10,
    per_user_limit: int | None = None,
    shard_count: int | None = None,
    hold_minutes: int = 10,
    low_stock_threshold: int | None = None,
    status: SaleStatus = SaleStatus.ON_SALE,
    event_id: str | None = None,
    organiser_id: str | None = None,
    types: Mapping[str, Any] | None = None,
    seats: Mapping[str, Any] | None = None,
) -> Event:
    """Validate and create an event with its inventory shards in one commit.

    ``organiser_id`` is the uid of the signed-in creator; only they may change the event later.
    ``starts_at`` must be in the future (``InvalidRequest``).
    ``types`` and ``seats`` are the JSON forms of ticket types (with shared pools) and of a seat
    map (``domain.ticket_types.type_specs_from_json``, ``domain.seating.seat_map_from_json``);
    without them the event sells one type at ``price``. Anything invalid raises a named
    ``InvalidRequest`` before anything is written.
    """
    now = datetime.now(UTC)
    require_future_start(starts_at, now)
    seat_map = seat_map_from_json(seats) if seats is not None else None
    specs, pools = (type_specs_from_json(types, currency=currency, per_order_max=per_order_max)
                    if types is not None else (None, ()))
    require_open_windows(specs or (), now)
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
        now=now,
        organiser_id=organiser_id,
        types=specs,
        pools=pools,
        seat_map=seat_map,
    )
    store.insert_event(db, event)
    return event


def require_future_start(starts_at: datetime, now: datetime) -> None:
    """A new or moved event starts in the future (imports of past events use the domain directly)."""
    if starts_at.tzinfo is not None and starts_at <= now:
        raise InvalidRequest("invalid event: starts_at must be in the future")


def require_open_windows(specs: Sequence[TypeSpec], now: datetime) -> None:
    """A new event's ticket types can all still be sold: a type whose sale closes before the
    event is created could never sell a ticket, which is a mistake in the request."""
    closed = [f"{t.id!r} ({t.closes_at.isoformat()})" for t in specs
              if t.closes_at is not None and t.closes_at.tzinfo is not None and t.closes_at <= now]
    if closed:
        raise InvalidSaleWindow("invalid sale windows: the sale of " + ", ".join(closed)
                                + " would close before the event is created")


def get_event(db: firestore.Client, event_id: str) -> tuple[Event, dict[str, Any]]:
    """The event and its availability summary (which may lag the shards by a few seconds)."""
    doc = store.load_event_document(db, event_id)
    return event_from_doc(event_id, doc), doc.get("summary", {})


def show_event(db: firestore.Client, event_id: str, viewer_id: str | None) -> tuple[Event, dict[str, Any]]:
    """``get_event`` for a reader (``None``: anonymous): a draft is its organiser's alone
    (``Event.visible_to``); anyone else gets ``EventNotFound``, as for a missing event."""
    event, summary = get_event(db, event_id)
    event.require_visible_to(viewer_id)
    return event, summary


# What anyone may list: every status but draft (firestore.rules lets clients list the same).
PUBLISHED = tuple(s.value for s in SaleStatus if s is not SaleStatus.DRAFT)


def list_events(
    db: firestore.Client, *, limit: int = 50, start_after: str | None = None, published_only: bool = False
) -> list[tuple[Event, dict[str, Any]]]:
    """Events by start time. ``published_only`` (the public list): drafts left out, and a cursor
    naming a draft is unknown."""
    return store.query_events(db, limit=limit, start_after=start_after,
                              statuses=PUBLISHED if published_only else None)


def inventory(db: firestore.Client, event_id: str) -> list[InventoryShard]:
    """The authoritative shard counts."""
    return sorted(store.load_shards(db, event_id), key=lambda s: s.id)


def live_counts(db: firestore.Client, event: Event) -> Summary:
    """The event's availability counted from its inventory shards just now (the authoritative
    counts, one read per shard, up to 200: for organisers and operators, not for every buyer)."""
    return compute_summary(inventory(db, event.id), event.status, event.low_stock_threshold, event.catalogue)


# What an organiser may change after creation. Capacity and sale state have their own use cases
# (releases), shard_count and currency never change once tickets may have been sold.
UPDATABLE_FIELDS = frozenset(
    {"name", "venue", "starts_at", "price", "per_order_max", "per_user_limit", "hold_minutes",
     "low_stock_threshold"}
)


def update_event(
    db: firestore.Client, event_id: str, organiser_id: str, changes: dict[str, Any]
) -> Event:
    """Change an event's details. Only its organiser may; the result is validated as a whole.

    Raises ``EventNotFound``, ``NotEventOrganiser``, ``InvalidRequest``. The write is guarded by
    the document's update time, so a concurrent change (a summary refresh, another edit) makes it
    re-read and re-validate rather than overwrite.
    """
    unknown = set(changes) - UPDATABLE_FIELDS
    if unknown:
        raise InvalidRequest(f"these fields cannot be changed here: {', '.join(sorted(unknown))}")
    if "starts_at" in changes:
        require_future_start(changes["starts_at"], datetime.now(UTC))
    for _ in range(5):
        snap = store.event_snapshot(db, event_id)
        current = event_from_doc(event_id, snap.to_dict() or {})
        current.require_organiser(organiser_id)
        if not changes:
            return current
        merged = {f: changes.get(f, getattr(current, f)) for f in UPDATABLE_FIELDS}
        updated = new_event(
            event_id=event_id, currency=current.currency, capacity=current.capacity,
            shard_count=current.shard_count, status=current.status, now=current.created_at,
            organiser_id=current.organiser_id, **merged,
        )
        try:
            store.update_event_fields(db, event_id, {f: getattr(updated, f) for f in changes},
                                      snap.update_time)
        except gexc.FailedPrecondition:
            continue
        return updated
    raise ContentionTimeout("the event is being changed by someone else right now; try again")
