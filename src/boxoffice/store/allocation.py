"""Staging the writes that take tickets, for purchases and holds alike.

One home for "take tickets from shards and record who got them": the allocator stages a whole
batch of grants through these functions into one atomic commit, and confirming a hold stages
its order through ``stage_order``. Business rules are decided before (``domain.allocation``,
``services``); this module only knows where the documents are and how they change.

Every count is a server-side increment: shards (``ShardMove.SELL``/``HOLD``, applied once per
shard for the whole batch) and buyer records. Only the lease-holding allocator takes from
``available``, and every other writer only gives back, so no write here needs the document's
previous version, and nothing here fights a cancellation, an expiry or a release.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from google.cloud import firestore

from boxoffice.domain import messages
from boxoffice.domain.allocation import Grant, RequestKind
from boxoffice.domain.model import Event, Hold, Order, ShardMove, Ticket, new_order
from boxoffice.store.documents import (
    buyer_ref,
    hold_ref,
    hold_to_doc,
    order_ref,
    order_to_doc,
    outbox_ref,
    outbox_to_doc,
    seat_ref,
    seat_releases_col,
    shard_move,
    shard_ref,
    ticket_ref,
    ticket_to_doc,
)


def stage_take(db: firestore.Client, writer: Any, event_id: str, taken: Mapping[str, int], move: ShardMove) -> None:
    """Take tickets from shards (``move`` is SELL or HOLD): one increment write per shard."""
    if move not in (ShardMove.SELL, ShardMove.HOLD):
        raise ValueError(f"{move} does not take tickets")
    for sid, n in taken.items():
        if n:
            writer.update(shard_ref(db, event_id, sid), shard_move(move, n))


def stage_buyer(
    db: firestore.Client, writer: Any, event_id: str, user_id: str, *, tickets: int = 0, held: int = 0,
    order_ids: list[str] | None = None, types: Mapping[str, int] | None = None,
    held_types: Mapping[str, int] | None = None,
) -> None:
    """Add to a buyer's per-event record (created if missing): tickets bought and held, orders,
    and for an event with ticket types the tickets bought and held of each type (negative
    numbers take away: a cancellation, a hold that ends)."""
    doc: dict[str, Any] = {
        "event_id": event_id,
        "user_id": user_id,
        "tickets": firestore.Increment(tickets),
        "held": firestore.Increment(held),
        "updated_at": firestore.SERVER_TIMESTAMP,
    }
    if types:
        doc["types"] = {t: firestore.Increment(n) for t, n in types.items()}
    if held_types:
        doc["held_types"] = {t: firestore.Increment(n) for t, n in held_types.items()}
    if order_ids:
        doc["order_ids"] = firestore.ArrayUnion(order_ids)
    writer.set(buyer_ref(db, event_id, user_id), doc, merge=True)


def stage_order(
    db: firestore.Client, writer: Any, order: Order, tickets: list[Ticket], message: messages.OutboxMessage
) -> None:
    """Stage the documents every new order writes: the order, its tickets and its outbox message.

    All are ``create`` writes, so a second commit of the same order fails as a whole
    (ALREADY_EXISTS) instead of selling twice. Shared by the allocator and confirmed holds.
    """
    writer.create(order_ref(db, order.id), order_to_doc(order))
    for ticket in tickets:
        writer.create(ticket_ref(db, ticket.id), ticket_to_doc(ticket))
    writer.create(outbox_ref(db, message.id), outbox_to_doc(message))


def stage_seats(db: firestore.Client, writer: Any, tickets: list[Ticket], *, confirm: bool = False) -> None:
    """One document per sold seat, ``create``d: a seat sold twice would fail the whole commit,
    whatever the allocator believed (a second line of defence behind its lease). ``confirm``:
    the seats were held (``stage_held_seats``) and now belong to these tickets (updated, keeping
    the hold id, so a seat freed meanwhile fails the commit instead of being taken back)."""
    for ticket in tickets:
        if ticket.seat is not None:
            doc = {"order_id": ticket.order_id, "ticket_id": ticket.id, "type_id": ticket.type_id,
                   "user_id": ticket.user_id, "sold_at": firestore.SERVER_TIMESTAMP}
            ref = seat_ref(db, ticket.event_id, ticket.seat)
            if confirm:
                writer.update(ref, doc)
            else:
                writer.create(ref, doc)


def stage_held_seats(db: firestore.Client, writer: Any, hold: Hold) -> None:
    """The seat documents of a hold's seats, ``create``d like sold ones: a seat is held or sold
    by one buyer at most, whatever the allocator believed."""
    for line in hold.lines:
        for seat in line.seat_ids:
            writer.create(seat_ref(db, hold.event_id, seat), {
                "hold_id": hold.id, "type_id": line.type_id, "user_id": hold.user_id,
                "held_at": firestore.SERVER_TIMESTAMP})


def stage_free_seats(db: firestore.Client, writer: Any, event_id: str, marker_id: str, seats: list[str]) -> None:
    """Give seats back (a cancelled ticket, a hold that ended): delete their seat documents and, in
    the same commit, leave a marker that the event's allocator reads before its next decision
    and deletes once its seat book has them free again (see ``services.allocator``). The
    allocator stays the only writer that *takes* seats and of the section documents.
    ``marker_id`` derives from what freed them, so a retried commit writes the same marker."""
    if not seats:
        return
    for seat in seats:
        writer.delete(seat_ref(db, event_id, seat))
    writer.set(seat_releases_col(db, event_id).document(marker_id),
               {"seats": sorted(seats), "created_at": firestore.SERVER_TIMESTAMP})


def stage_grant(db: firestore.Client, writer: Any, event: Event, grant: Grant, now: datetime) -> Order | Hold:
    """Stage what one granted request creates (not the shard counts: ``stage_take`` does them per
    batch): an order with its tickets and outbox message, or a hold; and the buyer's record."""
    request = grant.request
    if request.kind is RequestKind.PURCHASE:
        order, tickets = new_order(order_id=request.id, event=event, user_id=request.user_id,
                                   quantity=request.quantity, allocations=grant.allocations,
                                   idempotency_key=request.idempotency_key, lines=grant.lines)
        stage_order(db, writer, order, tickets, messages.order_confirmed(order))
        stage_seats(db, writer, tickets)
        stage_buyer(db, writer, event.id, request.user_id, tickets=request.quantity, order_ids=[order.id],
                    types={line.type_id: line.quantity for line in grant.lines})
        return order
    ttl = timedelta(seconds=request.hold_ttl_s) if request.hold_ttl_s else timedelta(minutes=event.hold_minutes)
    hold = Hold(id=request.id, event_id=event.id, user_id=request.user_id, quantity=request.quantity,
                allocations=dict(grant.allocations), expires_at=now + ttl,
                idempotency_key=request.idempotency_key, created_at=now, lines=grant.lines)
    writer.create(hold_ref(db, hold.id), hold_to_doc(hold))
    stage_held_seats(db, writer, hold)
    stage_buyer(db, writer, event.id, request.user_id, held=request.quantity,
                held_types={line.type_id: line.quantity for line in grant.lines})
    return hold
