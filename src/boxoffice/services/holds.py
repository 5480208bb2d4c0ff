"""Use cases of a checkout cart: hold tickets, confirm the hold as an order, release it, expire it.

A hold moves tickets from ``available`` to ``held`` on its shards; confirming moves them from
``held`` to ``sold`` on the same shards; releasing or expiring moves them back to
``available``. Held tickets never count as available and never as sold.

Every step is one atomic commit guarded by preconditions, the pattern of purchases:
- taking tickets (``hold_tickets``) guards each shard it takes from with the ``update_time``
  it read, like a purchase;
- the other moves only shift tickets the hold already owns, so they update the shards with
  server-side increments and guard the *hold* document instead: whoever commits first
  (confirm, release, or one of several sweepers) changes the hold, and every competitor's
  precondition then fails. That is why no hold is released twice, or confirmed after it
  expired, whatever runs concurrently or crashes halfway (a crash before the commit leaves the
  hold active for the next sweep; after it, the hold is already done).

The per-user limit counts tickets bought plus tickets held (``BuyerRecord.counted``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain import messages
from boxoffice.domain.allocation import RequestKind
from boxoffice.domain.errors import (
    EventNotFound,
    EventNotOnSale,
    HoldNotActive,
    HoldNotFound,
    NotAllowed,
)
from boxoffice.domain.model import (
    Hold,
    HoldStatus,
    Order,
    SaleStatus,
    ShardMove,
    new_order,
    order_id_for_hold,
)
from boxoffice.log import kv
from boxoffice.retry import DEFAULT_BACKOFF, Backoff, commit_with_retries
from boxoffice.services.admission import ask
from boxoffice.services.purchasing import PurchaseResult, make_request
from boxoffice.services.sections import rewrite_after_release
from boxoffice.store.allocation import stage_buyer, stage_free_seats, stage_order, stage_seats
from boxoffice.store.documents import (
    HOLDS,
    event_from_doc,
    event_ref,
    hold_from_doc,
    hold_ref,
    order_from_doc,
    order_ref,
    shard_move,
    shard_ref,
)

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 10.0
SWEEP_LIMIT = 200


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


# --- hold -------------------------------------------------------------------------------------


def hold_tickets(
    db: firestore.Client,
    event_id: str,
    user_id: str,
    quantity: int | None,
    idempotency_key: str,
    *,
    ttl_s: float | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
    types: Mapping[str, int] | None = None,
    seats: Sequence[str] | None = None,
) -> Hold:
    """Reserve ``quantity`` tickets for a user until the event's hold time (``hold_minutes``) passes.

    The request goes through the event's allocator like a purchase (``services.admission``), so
    holds and purchases are served in one arrival order. Guarantees: the shards, the user's
    per-event record, the hold and the answer are written in one commit; the same key returns
    the first hold; the user's bought + held tickets never exceed the per-user limit. ``ttl_s``
    overrides the event's hold time (tests, the simulator).

    An event with ticket types holds by type (``types``; seated types get the best seats
    available together) or specific ``seats``, exactly as ``purchase_tickets`` buys: the lines
    are priced when held, and the seats are the hold's (seat documents, like sold seats) until
    it is confirmed, released or expires; a seat taken or held by someone else is refused
    (``SeatUnavailable``).
    Raises like ``purchase_tickets`` (``SoldOut``, ``PerUserLimitExceeded``, ``AnswerPending`` ...).
    """
    request = replace(make_request(event_id, user_id, quantity, idempotency_key, RequestKind.HOLD,
                                   types=types, seats=seats), hold_ttl_s=ttl_s)
    asked = ask(db, request, wait_s=deadline_s)
    if not asked.answer.granted:
        raise asked.answer.error()
    hold = get_hold(db, request.id)
    kv(log, logging.INFO, "hold.done", hold_id=hold.id, event_id=event_id, user_id=user_id,
       quantity=quantity, expires_at=hold.expires_at.isoformat(), replayed=asked.replayed)
    return hold


def _get_all(db: firestore.Client, refs: list[Any]) -> list[Any]:
    by_path = {s.reference.path: s for s in db.get_all(refs)}
    return [by_path[r.path] for r in refs]


def get_hold(db: firestore.Client, hold_id: str) -> Hold:
    snap = hold_ref(db, hold_id).get()
    if not snap.exists:
        raise HoldNotFound(hold_id)
    return hold_from_doc(hold_id, snap.to_dict() or {})


# --- confirm ----------------------------------------------------------------------------------


def confirm_hold(
    db: firestore.Client,
    hold_id: str,
    user_id: str,
    *,
    now: datetime | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
    backoff: Backoff = DEFAULT_BACKOFF,
    rng: random.Random | None = None,
) -> PurchaseResult:
    """Turn a live hold into an order, with the guarantees of a purchase.

    One commit moves the held tickets to sold on the same shards, marks the hold confirmed
    (guarded by its ``update_time``), updates the buyer's record and creates the order, its
    tickets and its ``order.confirmed`` outbox message (the purchase code's writes). The order
    id derives from the hold, so confirming twice returns the first order (``replayed=True``).
    Raises ``HoldNotFound``, ``NotAllowed`` (someone else's hold), ``HoldExpired`` (clear error:
    the tickets went back on sale), ``HoldNotActive`` (released), ``EventNotOnSale`` (closed).
    A paused sale still confirms holds taken before the pause.
    """
    order_id = order_id_for_hold(user_id, hold_id)

    def attempt() -> tuple[Order, bool]:
        hold_snap, order_snap = _get_all(db, [hold_ref(db, hold_id), order_ref(db, order_id)])
        if not hold_snap.exists:
            raise HoldNotFound(hold_id)
        hold = hold_from_doc(hold_id, hold_snap.to_dict() or {})
        if hold.user_id != user_id:
            raise NotAllowed(f"hold {hold_id!r} belongs to another user")
        if order_snap.exists:
            return order_from_doc(order_id, order_snap.to_dict() or {}), True
        hold.require_confirmable(_now(now))
        ev = event_ref(db, hold.event_id).get()
        if not ev.exists:
            raise EventNotFound(hold.event_id)
        event = event_from_doc(hold.event_id, ev.to_dict() or {})
        if event.status is SaleStatus.CLOSED:
            raise EventNotOnSale(event.id, event.status.value)
        order, tickets = new_order(order_id=order_id, event=event, user_id=user_id, quantity=hold.quantity,
                                   allocations=hold.allocations, idempotency_key=f"hold:{hold_id}", hold_id=hold_id,
                                   lines=hold.lines)
        batch = db.batch()
        for sid, n in hold.allocations.items():
            batch.update(shard_ref(db, event.id, sid), shard_move(ShardMove.CONFIRM, n))
        batch.update(hold_ref(db, hold_id), {"status": HoldStatus.CONFIRMED.value, "order_id": order_id,
                                             "closed_at": firestore.SERVER_TIMESTAMP},
                     option=db.write_option(last_update_time=hold_snap.update_time))
        per_type = _per_type(hold)
        stage_buyer(db, batch, event.id, user_id, tickets=hold.quantity, held=-hold.quantity, order_ids=[order_id],
                    types=per_type, held_types={t: -n for t, n in per_type.items()})
        stage_order(db, batch, order, tickets, messages.order_confirmed(order))
        stage_seats(db, batch, tickets, confirm=True)
        batch.commit()
        return order, False

    (order, replayed), attempts = commit_with_retries(f"confirm hold {hold_id}", attempt, deadline_s=deadline_s,
                                                      backoff=backoff, rng=rng)
    kv(log, logging.INFO, "hold.confirmed", hold_id=hold_id, order_id=order.id, user_id=user_id, replayed=replayed)
    return PurchaseResult(order, replayed, attempts)


# --- release and expiry -------------------------------------------------------------------------


def _per_type(hold: Hold) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in hold.lines:
        out[line.type_id] = out.get(line.type_id, 0) + line.quantity
    return out


def _stage_unhold(db: firestore.Client, batch: Any, hold: Hold, hold_snap: Any, status: HoldStatus) -> None:
    """Stage the return of a hold's tickets to its shards and of its seats (deleted seat documents
    and a marker for the allocator: ``stage_free_seats``), guarded by the hold's ``update_time``."""
    for sid, n in hold.allocations.items():
        batch.update(shard_ref(db, hold.event_id, sid), shard_move(ShardMove.UNHOLD, n))
    batch.update(hold_ref(db, hold.id), {"status": status.value, "closed_at": firestore.SERVER_TIMESTAMP},
                 option=db.write_option(last_update_time=hold_snap.update_time))
    stage_buyer(db, batch, hold.event_id, hold.user_id, held=-hold.quantity,
                held_types={t: -n for t, n in _per_type(hold).items()})
    stage_free_seats(db, batch, hold.event_id, f"{hold.id}.{status.value}", list(hold.seat_ids))


def release_hold(
    db: firestore.Client,
    hold_id: str,
    user_id: str,
    *,
    deadline_s: float = DEFAULT_DEADLINE_S,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> Hold:
    """The user gives up a hold: its tickets return to inventory at once. Releasing twice is harmless
    (an expired or released hold is returned as it is). Raises ``HoldNotActive`` if it became an order."""

    def attempt() -> Hold:
        snap = hold_ref(db, hold_id).get()
        if not snap.exists:
            raise HoldNotFound(hold_id)
        hold = hold_from_doc(hold_id, snap.to_dict() or {})
        if hold.user_id != user_id:
            raise NotAllowed(f"hold {hold_id!r} belongs to another user")
        if hold.status in (HoldStatus.RELEASED, HoldStatus.EXPIRED):
            return hold
        if hold.status is HoldStatus.CONFIRMED:
            raise HoldNotActive(hold_id, hold.status.value)
        batch = db.batch()
        _stage_unhold(db, batch, hold, snap, HoldStatus.RELEASED)
        batch.commit()
        return replace(hold, status=HoldStatus.RELEASED)

    hold, _ = commit_with_retries("release the hold", attempt, deadline_s=deadline_s, backoff=backoff)
    kv(log, logging.INFO, "hold.released", hold_id=hold_id, event_id=hold.event_id, user_id=user_id)
    if hold.seat_ids:
        rewrite_after_release(db, hold.event_id)  # no allocator for the event: shown free now
    return hold


def release_expired_holds(db: firestore.Client, now: datetime | None = None, limit: int = SWEEP_LIMIT) -> int:
    """Return the tickets of up to ``limit`` active holds that expired by ``now``; the number released.

    Safe to run twice at once and to crash halfway: each hold is released in its own commit
    guarded by the hold's ``update_time``, so of two sweepers (or a sweeper and a confirm) only
    the first commit wins, and a hold not yet released stays active for the next sweep.
    Production needs a composite index on holds (status, expires_at).
    """
    cutoff = _now(now)
    query = (
        db.collection(HOLDS)
        .where(filter=FieldFilter("status", "==", HoldStatus.ACTIVE.value))
        .where(filter=FieldFilter("expires_at", "<=", cutoff))
        .limit(limit)
    )
    released = 0
    seated: set[str] = set()
    for snap in query.stream():
        hold = hold_from_doc(snap.id, snap.to_dict() or {})
        batch = db.batch()
        _stage_unhold(db, batch, hold, snap, HoldStatus.EXPIRED)
        try:
            batch.commit()
        except (gexc.FailedPrecondition, gexc.Conflict, gexc.NotFound):
            continue  # confirmed, released or expired by someone else since the query: theirs
        released += 1
        if hold.seat_ids:
            seated.add(hold.event_id)
        kv(log, logging.INFO, "hold.expired", hold_id=hold.id, event_id=hold.event_id, user_id=hold.user_id,
           quantity=hold.quantity)
    for event_id in sorted(seated):
        rewrite_after_release(db, event_id)  # events with no allocator: their seats shown free now
    return released
