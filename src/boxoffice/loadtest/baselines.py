"""Bench baselines: one purchase per commit, each buyer racing the others in Firestore.

These are not how boxoffice sells (that is the batch allocator, ``services.allocator``); they are
what the bench measures it against:

- the **ceiling**: every buyer buys the only ticket of its own private event, so nothing
  contends and each purchase is one commit of its writes: the most one-purchase-per-commit
  can do on this machine;
- **direct sharded**: buyers of one event read its shards with stock and commit their own
  purchase guarded by the shard's ``update_time`` (an optimistic transaction), retrying lost
  races with jittered backoff;
- **single document**: the same on one inventory document, as a guarded batch or as a
  Firestore transaction (whose reads lock the document).
"""

from __future__ import annotations

import random
from dataclasses import replace
from enum import StrEnum
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain import messages
from boxoffice.domain.errors import EventNotFound
from boxoffice.domain.model import Order, new_order, plan_allocation, shard_id
from boxoffice.retry import Backoff, commit_with_retries
from boxoffice.services.purchasing import make_request
from boxoffice.store.allocation import stage_order
from boxoffice.store.documents import (
    SHARD_CHANGED_AT,
    buyer_from_doc,
    buyer_ref,
    buyer_to_doc,
    event_from_doc,
    event_ref,
    inventory_col,
    order_from_doc,
    order_ref,
    shard_from_doc,
    shard_ref,
)

BACKOFF = Backoff(base_s=0.005, cap_s=0.25)


class CommitMode(StrEnum):
    GUARDED_BATCH = "batch"
    TRANSACTION = "transaction"


def purchase_directly(
    db: firestore.Client,
    event_id: str,
    user_id: str,
    quantity: int,
    idempotency_key: str,
    *,
    mode: CommitMode = CommitMode.GUARDED_BATCH,
    deadline_s: float = 10.0,
    rng: random.Random | None = None,
) -> tuple[Order, int]:
    """One purchase in its own commit, retried until it lands; returns the order and the attempts.

    Raises the domain's refusals (``SoldOut`` ...) and ``ContentionTimeout`` at the deadline.
    """
    request = make_request(event_id, user_id, quantity, idempotency_key)
    rng = rng or random.Random()

    def attempt() -> Order:
        if mode is CommitMode.TRANSACTION:
            return _in_transaction(db, request, rng)
        batch = db.batch()
        order = _attempt(db, request, rng, batch, db.get_all, lambda q: q.stream(), guarded=True)
        if order.created_at is None:  # not a replay
            batch.commit()
        return order

    return commit_with_retries("buy", attempt, deadline_s=deadline_s, backoff=BACKOFF, rng=rng)


def _in_transaction(db: firestore.Client, request: Any, rng: random.Random) -> Order:
    @firestore.transactional
    def run(txn: Any) -> Order:
        return _attempt(db, request, rng, txn, txn.get_all, txn.get, guarded=False)

    try:
        order: Order = run(db.transaction(max_attempts=1))
        return order
    except ValueError as exc:  # the client's "could not commit" is a lost race like any other
        raise gexc.Aborted(str(exc)) from exc


def _attempt(db: firestore.Client, request: Any, rng: random.Random, writer: Any, get_all: Any, query: Any,
             *, guarded: bool) -> Order:
    refs = [event_ref(db, request.event_id), order_ref(db, request.id), buyer_ref(db, request.event_id, request.user_id)]
    by_path = {s.reference.path: s for s in get_all(refs)}
    ev, existing, buyer_snap = (by_path[r.path] for r in refs)
    if not ev.exists:
        raise EventNotFound(request.event_id)
    event = event_from_doc(request.event_id, ev.to_dict() or {})
    if existing.exists:
        return order_from_doc(existing.id, existing.to_dict() or {})  # a replay (created_at is set)
    event.require_on_sale()
    event.validate_quantity(request.quantity)
    buyer = buyer_from_doc(event.id, request.user_id, buyer_snap.to_dict() if buyer_snap.exists else None)
    event.check_user_limit(buyer.counted, request.quantity)
    if guarded:
        found = list(query(inventory_col(db, event.id).where(filter=FieldFilter("available", ">", 0))))
    else:
        # In a transaction, read the shards by id: the emulator locks a query's whole collection
        # id (every event's `inventory`), which turned the transaction ceiling into one global lock
        # (1 of 5,000 buyers served in the bench); by id it locks only this event's shards.
        found = [s for s in get_all([shard_ref(db, event.id, shard_id(i)) for i in range(event.shard_count)])
                 if s.exists and int((s.to_dict() or {}).get("available", 0)) > 0]
    shards = {s.id: (shard_from_doc(s.id, s.to_dict() or {}), s) for s in found}
    allocations = plan_allocation([sh for sh, _ in shards.values()], request.quantity, event.id, rng)
    for sid, n in allocations.items():
        shard, snap = shards[sid]
        after = shard.take(n)
        option = db.write_option(last_update_time=snap.update_time) if guarded else None
        writer.update(shard_ref(db, event.id, sid), {"available": after.available, "sold": after.sold,
                                                     SHARD_CHANGED_AT: firestore.SERVER_TIMESTAMP}, option=option)
    order, tickets = new_order(order_id=request.id, event=event, user_id=request.user_id, quantity=request.quantity,
                               allocations=allocations, idempotency_key=request.idempotency_key)
    new_buyer = replace(buyer, tickets=buyer.tickets + request.quantity, order_ids=(*buyer.order_ids, order.id))
    if buyer_snap.exists:
        option = db.write_option(last_update_time=buyer_snap.update_time) if guarded else None
        writer.update(buyer_ref(db, event.id, request.user_id), buyer_to_doc(new_buyer), option=option)
    else:
        writer.create(buyer_ref(db, event.id, request.user_id), buyer_to_doc(new_buyer))
    stage_order(db, writer, order, tickets, messages.order_confirmed(order))
    return order
