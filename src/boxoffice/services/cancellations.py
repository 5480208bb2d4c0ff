"""Use case: a buyer (or the organiser) cancels an order, whole or some of its tickets.

One commit voids the tickets, updates the order, returns the tickets' count to the shards
they were sold from (``sold`` -> ``available``), lowers the buyer's count for the per-user
limit, writes a refund record and an ``order.cancelled`` outbox message.

An order with ticket types is cancelled by ticket or by type (``types``: n tickets of a
type); each ticket goes back to the shards of every quota its type takes from
(``domain.model.ticket_shards``), the buyer's count of each type goes down, and the refund is
priced per line. A seated ticket's seat document is deleted in the same commit, with a marker
for the event's allocator, the only writer that takes seats and (while it holds the lease) of
the section documents: it frees the seat in its in-memory seat book before its next decision
(``services.allocator``); when no allocator holds the lease (a closed sale), the section is
rewritten right after the commit (``services.sections``). The order and each
voided ticket are guarded by the ``update_time`` that was read, so two concurrent
cancellations cannot void a ticket twice; tickets already void are skipped, so cancelling
twice is harmless (the second call writes nothing and returns the order).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from google.cloud import firestore

from boxoffice.domain import messages
from boxoffice.domain.errors import EventNotFound, InvalidRequest, NotAllowed, OrderNotFound
from boxoffice.domain.model import (
    Order,
    Refund,
    ShardMove,
    TicketStatus,
    cancel_order_tickets,
    choose_tickets_to_cancel,
    refund_id_for,
    ticket_prices_of,
    ticket_seats_of,
    ticket_shards,
    ticket_types_of,
)
from boxoffice.log import kv
from boxoffice.retry import DEFAULT_BACKOFF, Backoff, commit_with_retries
from boxoffice.services.sections import rewrite_after_release
from boxoffice.store.allocation import stage_buyer, stage_free_seats
from boxoffice.store.documents import (
    event_from_doc,
    event_ref,
    order_from_doc,
    order_ref,
    outbox_ref,
    outbox_to_doc,
    refund_ref,
    refund_to_doc,
    shard_move,
    shard_ref,
    ticket_ref,
)

log = logging.getLogger(__name__)


def cancel_order(
    db: firestore.Client,
    order_id: str,
    user_id: str,
    *,
    ticket_ids: Sequence[str] | None = None,
    types: Mapping[str, int] | None = None,
    by_organiser: bool = False,
    deadline_s: float = 10.0,
    backoff: Backoff = DEFAULT_BACKOFF,
    rng: random.Random | None = None,
) -> Order:
    """Cancel ``ticket_ids`` of an order (all of them by default) and return the order after it.

    A user may cancel only their own orders; ``by_organiser=True`` may cancel any. ``types``
    ({type id: n}) cancels n still-valid tickets of each type instead of naming tickets. Raises
    ``OrderNotFound``, ``NotAllowed``, ``InvalidRequest`` (a ticket not in the order, a type
    not in it, more of a type than are still valid), ``ContentionTimeout``.
    """

    def attempt() -> tuple[Order, Refund | None]:
        snap = order_ref(db, order_id).get()
        if not snap.exists:
            raise OrderNotFound(order_id)
        order = order_from_doc(order_id, snap.to_dict() or {})
        if not by_organiser and order.user_id != user_id:
            raise NotAllowed(f"order {order_id!r} belongs to another user")
        if types is not None and not order.lines:
            raise InvalidRequest(f"order {order_id} has no ticket types: name the tickets to cancel instead")
        refs = [ticket_ref(db, t) for t in order.ticket_ids]
        tickets = {s.id: s for s in db.get_all(refs)}
        valid = [t for t, s in tickets.items() if s.exists and (s.to_dict() or {}).get("status") == TicketStatus.VALID]
        chosen = choose_tickets_to_cancel(order, valid, ticket_ids, types)
        if not chosen:
            # The tickets were read after the order: a concurrent cancellation may have voided
            # them since. Its commit changed the order too, so read the order again to answer
            # the state after it, not the one read before it.
            fresh = order_ref(db, order_id).get()
            return order_from_doc(order_id, fresh.to_dict() or {}), None
        after = cancel_order_tickets(order, len(chosen))
        price_of = ticket_prices_of(order)
        refund = Refund(
            id=refund_id_for(order.id, chosen), order_id=order.id, event_id=order.event_id, user_id=order.user_id,
            ticket_ids=tuple(chosen), amount=sum(price_of[t] for t in chosen), currency=order.currency,
            by_organiser=by_organiser,
        )
        shards_of = ticket_shards(order, _quota_ids(db, order) if order.lines else None)
        batch = db.batch()
        batch.update(order_ref(db, order.id), {
            "status": after.status.value,
            "cancelled_quantity": after.cancelled_quantity,
            "updated_at": firestore.SERVER_TIMESTAMP,
        }, option=db.write_option(last_update_time=snap.update_time))
        for t in chosen:
            batch.update(ticket_ref(db, t), {"status": TicketStatus.VOID.value, "voided_at": firestore.SERVER_TIMESTAMP,
                                             "refund_id": refund.id},
                         option=db.write_option(last_update_time=tickets[t].update_time))
        for sid, n in Counter(sid for t in chosen for sid in shards_of[t]).items():
            batch.update(shard_ref(db, order.event_id, sid), shard_move(ShardMove.REFUND, n))
        type_of = ticket_types_of(order) if order.lines else {}
        stage_buyer(db, batch, order.event_id, order.user_id, tickets=-len(chosen),
                    types={k: -n for k, n in Counter(type_of[t] for t in chosen if t in type_of).items()})
        seat_of = ticket_seats_of(order)
        stage_free_seats(db, batch, order.event_id, refund.id, [seat_of[t] for t in chosen if t in seat_of])
        batch.create(refund_ref(db, refund.id), refund_to_doc(refund))
        message = messages.order_cancelled(after, refund)
        batch.create(outbox_ref(db, message.id), outbox_to_doc(message))
        batch.commit()
        return after, refund

    (order, refund), _ = commit_with_retries(f"cancel order {order_id}", attempt, deadline_s=deadline_s,
                                             backoff=backoff, rng=rng)
    kv(log, logging.INFO, "order.cancelled", order_id=order_id, event_id=order.event_id, user_id=order.user_id,
       cancelled=refund.quantity if refund else 0, refund_id=refund.id if refund else None,
       by_organiser=by_organiser, status=order.status.value)
    seat_of = ticket_seats_of(order)
    if refund is not None and any(t in seat_of for t in refund.ticket_ids):
        rewrite_after_release(db, order.event_id)  # no allocator for the event: shown free now
    return order


def _quota_ids(db: firestore.Client, order: Order) -> Callable[[str], Sequence[str]]:
    """The quotas each ticket type of the order's event takes from (types are never removed
    from an event that sold them, so the event's catalogue knows every type of the order)."""
    ev = event_ref(db, order.event_id).get()
    if not ev.exists:
        raise EventNotFound(order.event_id)
    catalogue = event_from_doc(order.event_id, ev.to_dict() or {}).ticket_types
    return lambda type_id: catalogue.type(type_id).quota_ids


def cancel_order_as(
    db: firestore.Client,
    order_id: str,
    caller_id: str,
    *,
    caller_is_organiser: bool,
    ticket_ids: Sequence[str] | None = None,
    types: Mapping[str, int] | None = None,
) -> Order:
    """Cancel on behalf of a signed-in caller (the HTTP API): who may, decided in one place.

    The buyer may cancel their own order; an organiser (``caller_is_organiser``: the verified
    ``organiser`` claim) may cancel any order of an event whose ``organiser_id`` is theirs.
    Anyone else gets ``OrderNotFound``, exactly as for a missing order, so ids cannot be probed.
    Ownership never changes after creation, so checking it before ``cancel_order``'s guarded
    commit is safe.
    """
    if not order_id or "/" in order_id:
        raise OrderNotFound(order_id)
    snap = order_ref(db, order_id).get()
    if not snap.exists:
        raise OrderNotFound(order_id)
    owner = (snap.to_dict() or {}).get("user_id")
    if owner == caller_id:
        return cancel_order(db, order_id, caller_id, ticket_ids=ticket_ids, types=types)
    if caller_is_organiser:
        event_id = (snap.to_dict() or {}).get("event_id") or ""
        ev = event_ref(db, event_id).get() if event_id and "/" not in event_id else None
        if ev is not None and ev.exists and event_from_doc(event_id, ev.to_dict() or {}).organiser_id == caller_id:
            return cancel_order(db, order_id, caller_id, ticket_ids=ticket_ids, types=types, by_organiser=True)
    raise OrderNotFound(order_id)
