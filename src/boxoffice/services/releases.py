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

from google.api_core import exceptions as gexc
from google.cloud import firestore

from boxoffice.domain import messages
from boxoffice.domain.errors import (
    ContentionTimeout,
    EventNotFound,
    EventNotOnSale,
    InvalidQuantity,
    InvalidRequest,
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
from boxoffice.log import kv
from boxoffice.retry import Backoff, commit_with_retries
from boxoffice.services.summary import refresh_summary
from boxoffice.store.documents import (
    event_from_doc,
    event_ref,
    outbox_ref,
    outbox_to_doc,
    shard_move,
    shard_ref,
    shard_to_doc,
)

log = logging.getLogger(__name__)

MAX_RELEASE = 100_000


def release_tickets(db: firestore.Client, event_id: str, quantity: int, *, deadline_s: float = 10.0,
                    organiser_id: str | None = None) -> Event:
    """Add ``quantity`` tickets to the event's inventory; returns the event after the release.

    With ``organiser_id`` (the HTTP API), only that event's organiser may: checked on the same
    read of the event that the commit is guarded by. Raises ``InvalidQuantity``,
    ``EventNotFound``, ``NotEventOrganiser``, ``EventNotOnSale`` (closed sale).
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
        if event.catalogue is not None:
            # The new tickets would need a pool (and seats); not built yet, see improvements.
            raise InvalidRequest("releases add tickets to single-type events only; this event has ticket types")
        releases = int(doc.get("releases", 0)) + 1
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
       shards=event.shard_count)
    return event


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
