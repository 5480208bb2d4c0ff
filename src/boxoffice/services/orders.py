"""Use cases of a buyer looking at their orders: show one, list theirs.

A buyer sees only their own orders: an order of someone else is reported exactly like a missing
one (``OrderNotFound``), so ids cannot be probed.
"""

from __future__ import annotations

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain.errors import OrderNotFound
from boxoffice.domain.model import Order, Ticket
from boxoffice.store.documents import (
    ORDERS,
    order_from_doc,
    order_ref,
    ticket_from_doc,
    ticket_ref,
)


def get_order(db: firestore.Client, order_id: str, user_id: str) -> Order:
    """The order ``order_id`` if it belongs to ``user_id``; else ``OrderNotFound``."""
    if not order_id or "/" in order_id:
        raise OrderNotFound(order_id)
    snap = order_ref(db, order_id).get()
    if not snap.exists:
        raise OrderNotFound(order_id)
    order = order_from_doc(order_id, snap.to_dict() or {})
    if order.user_id != user_id:
        raise OrderNotFound(order_id)
    return order


def tickets_of(db: firestore.Client, order: Order) -> list[Ticket]:
    """The order's tickets (one batched read)."""
    refs = [ticket_ref(db, t) for t in order.ticket_ids]
    snaps = {s.id: s for s in db.get_all(refs)} if refs else {}
    return [ticket_from_doc(t, snaps[t].to_dict() or {}) for t in order.ticket_ids
            if t in snaps and snaps[t].exists]


def list_orders_for_user(
    db: firestore.Client, user_id: str, *, limit: int = 20, start_after: str | None = None
) -> list[Order]:
    """The user's orders, newest first; cursor-paginated by the last order id seen.

    Needs the composite index orders(user_id ASC, created_at DESC) in firestore.indexes.json.
    A cursor naming someone else's order is treated as unknown (``OrderNotFound``).
    """
    query = (
        db.collection(ORDERS)
        .where(filter=FieldFilter("user_id", "==", user_id))
        .order_by("created_at", direction=firestore.Query.DESCENDING)
        .order_by("__name__", direction=firestore.Query.DESCENDING)
        .limit(limit)
    )
    if start_after is not None:
        if "/" in start_after or not start_after:
            raise OrderNotFound(start_after)
        cursor = order_ref(db, start_after).get()
        if not cursor.exists or (cursor.to_dict() or {}).get("user_id") != user_id:
            raise OrderNotFound(start_after)
        query = query.start_after(cursor)
    return [order_from_doc(s.id, s.to_dict() or {}) for s in query.stream()]
