"""Use cases of an organiser during a sale: release more tickets, pause, resume, close.

A release adds capacity without disturbing buyers in flight: while the event has fewer than
``MAX_SHARDS`` shards it adds *new* shard documents (no buyer is reading them, so no
purchase's precondition fails); beyond that it grows existing shards with server-side
increments (a buyer racing on such a shard retries once, as after any competing sale).
The event's ``capacity`` and ``shard_count`` change in the same commit, guarded by the event
document's ``update_time``, with a ``tickets.released`` outbox message. The inventory trigger
then updates the summary (a sold-out event shows as on sale again) and the waitlist is offered
the new tickets.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from boxoffice.domain import messages
from boxoffice.domain.errors import (
    ContentionTimeout,
    EventNotFound,
    EventNotOnSale,
    InvalidQuantity,
    InvalidRequest,
    UnknownTicketType,
)
from boxoffice.domain.model import (
    MAX_SHARDS,
    TICKETS_PER_SHARD,
    Event,
    InventoryShard,
    SaleStatus,
    ShardMove,
    next_sale_status,
    shard_id,
    split_capacity,
)
from boxoffice.domain.ticket_types import DEFAULT_POOL_ID, DEFAULT_TYPE_ID
from boxoffice.log import kv
from boxoffice.retry import Backoff, commit_with_retries
from boxoffice.services.summary import refresh_summary
from boxoffice.store.documents import (
    catalogue_to_doc,
    event_from_doc,
    event_ref,
    inventory_col,
    outbox_ref,
    outbox_to_doc,
    shard_move,
    shard_ref,
    shard_to_doc,
)

log = logging.getLogger(__name__)

MAX_RELEASE = 100_000


def release_tickets(db: firestore.Client, event_id: str, quantity: int, *, deadline_s: float = 10.0,
                    organiser_id: str | None = None, type_id: str | None = None) -> Event:
    """Add ``quantity`` tickets to the event's inventory; returns the event after the release.

    An event with ticket types releases tickets of one type (``type_id``, required there): its
    pool grows, and in a shared pool its cap and the caps sized by the pool too
    (``Catalogue.released``); the event's stored types change in the same commit, so every
    quota's capacity stays what the catalogue says. A seated type is refused (its capacity is
    its seats).

    With ``organiser_id`` (the HTTP API), only that event's organiser may: checked on the same
    read of the event that the commit is guarded by. Raises ``InvalidQuantity``,
    ``EventNotFound``, ``NotEventOrganiser``, ``EventNotOnSale`` (closed sale),
    ``UnknownTicketType``, ``InvalidRequest`` (no type named for a typed event, a seated type).
    Not idempotent across retries of the caller: a repeated call releases again.
    """
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_RELEASE:
        raise InvalidQuantity(f"a release adds between 1 and {MAX_RELEASE} tickets, got {quantity!r}")

    def attempt() -> Event:
        snap = event_ref(db, event_id).get()
        if not snap.exists:
            raise EventNotFound(event_id)
        doc = snap.to_dict() or {}
        event = event_from_doc(event_id, doc)
        if organiser_id is not None:
            event.require_organiser(organiser_id)
        if event.status is SaleStatus.CLOSED:
            raise EventNotOnSale(event_id, event.status.value)
        releases = int(doc.get("releases", 0)) + 1
        if event.catalogue is not None:
            return _release_of_type(db, event, snap, type_id, quantity, releases)
        if type_id not in (None, DEFAULT_TYPE_ID):
            raise UnknownTicketType([str(type_id)])
        new_shards = min(MAX_SHARDS - event.shard_count, math.ceil(quantity / TICKETS_PER_SHARD))
        batch = db.batch()
        if new_shards > 0:
            for i, cap in enumerate(split_capacity(quantity, new_shards)):
                shard = InventoryShard(id=shard_id(event.shard_count + i), capacity=cap, available=cap)
                batch.create(shard_ref(db, event_id, shard.id), shard_to_doc(shard))
        else:
            spread = split_capacity(quantity, event.shard_count)
            for i, add in enumerate(spread):
                if add:
                    batch.update(shard_ref(db, event_id, shard_id(i)), shard_move(ShardMove.GROW, add))
        shard_count = event.shard_count + max(0, new_shards)
        capacity = event.capacity + quantity
        batch.update(event_ref(db, event_id), {"capacity": capacity, "shard_count": shard_count,
                                               "releases": releases},
                     option=db.write_option(last_update_time=snap.update_time))
        message = messages.tickets_released(event_id, f"release{releases}", quantity, capacity)
        batch.create(outbox_ref(db, message.id), outbox_to_doc(message))
        batch.commit()
        return replace(event, capacity=capacity, shard_count=shard_count)

    event, _ = commit_with_retries(f"release tickets for {event_id}", attempt, deadline_s=deadline_s,
                                   backoff=Backoff(base_s=0.05, cap_s=0.5))
    kv(log, logging.INFO, "tickets.released", event_id=event_id, quantity=quantity, capacity=event.capacity,
       shards=event.shard_count, type_id=type_id)
    return event


def _release_of_type(db: firestore.Client, event: Event, snap: Any, type_id: str | None, quantity: int,
                     releases: int) -> Event:
    """One release of a typed event: new shards for every quota that grows (``{quota}.sNNN``, the
    next free numbers) while the event has fewer than ``MAX_SHARDS``, else its shards grow."""
    assert event.catalogue is not None
    if type_id is None:
        raise InvalidRequest("this event has ticket types: name the type to release")
    catalogue, growth = event.catalogue.released(type_id, quantity)
    by_quota: dict[str, list[str]] = {}
    for snap_ in inventory_col(db, event.id).select(["pool"]).stream():
        by_quota.setdefault((snap_.to_dict() or {}).get("pool") or DEFAULT_POOL_ID, []).append(snap_.id)
    batch = db.batch()
    added = 0
    for quota, n in growth.items():
        ids = sorted(by_quota.get(quota, []))
        new = min(MAX_SHARDS - event.shard_count - added, math.ceil(n / TICKETS_PER_SHARD))
        if new > 0 or not ids:
            first = 1 + max(int(i.rsplit(".s", 1)[1]) for i in ids) if ids else 0
            for i, cap in enumerate(split_capacity(n, max(1, new))):
                shard = InventoryShard(id=shard_id(first + i, quota), capacity=cap, available=cap, pool=quota)
                batch.create(shard_ref(db, event.id, shard.id), shard_to_doc(shard))
            added += max(1, new)
        else:
            for sid, add in zip(ids, split_capacity(n, len(ids)), strict=True):
                if add:
                    batch.update(shard_ref(db, event.id, sid), shard_move(ShardMove.GROW, add))
    capacity = event.capacity + quantity
    batch.update(event_ref(db, event.id), {"capacity": capacity, "shard_count": event.shard_count + added,
                                           "releases": releases, "ticket_types": catalogue_to_doc(catalogue)},
                 option=db.write_option(last_update_time=snap.update_time))
    message = messages.tickets_released(event.id, f"release{releases}", quantity, capacity)
    batch.create(outbox_ref(db, message.id), outbox_to_doc(message))
    batch.commit()
    return replace(event, capacity=capacity, shard_count=event.shard_count + added, catalogue=catalogue)


def set_sale_status(db: firestore.Client, event_id: str, status: SaleStatus | str, *,
                    organiser_id: str | None = None) -> Event:
    """Pause (``paused``), resume (``on_sale``) or close (``closed``, final) the sale.

    With ``organiser_id`` (the HTTP API), only that event's organiser may (``NotEventOrganiser``).

    Purchases and holds are refused while not on sale; holds taken before a pause can still be
    confirmed until the sale closes. The summary's state is refreshed at once (not waiting for
    a shard change). Raises ``InvalidSaleTransition``, ``EventNotFound``.
    """
    wanted = SaleStatus(status)
    for _ in range(20):
        snap = event_ref(db, event_id).get()
        if not snap.exists:
            raise EventNotFound(event_id)
        event = event_from_doc(event_id, snap.to_dict() or {})
        if organiser_id is not None:
            event.require_organiser(organiser_id)
        new = next_sale_status(event.status, wanted)
        if new is event.status:
            return event
        batch = db.batch()
        batch.update(event_ref(db, event_id), {"status": new.value},
                     option=db.write_option(last_update_time=snap.update_time))
        change = str(int(datetime.now(UTC).timestamp() * 1_000_000))
        message = messages.sale_status_changed(event_id, new.value, event.status.value, change)
        batch.create(outbox_ref(db, message.id), outbox_to_doc(message))
        try:
            batch.commit()
        except (gexc.FailedPrecondition, gexc.Conflict):
            continue  # the summary was written meanwhile: read again
        refresh_summary(db, event_id, force=True)
        kv(log, logging.INFO, "sale.status", event_id=event_id, status=new.value, previous=event.status.value)
        return replace(event, status=new)
    raise ContentionTimeout(f"could not change the sale status of {event_id}: the event kept changing")
