"""Where each kind of document lives in Firestore, and how domain objects map to documents.

    events/{eventId}                       the event and its availability summary
    events/{eventId}/inventory/{shardId}   authoritative counts: capacity, available, held, sold
    events/{eventId}/buyers/{userId}       tickets one user holds for the event (per-user limit)
    orders/{orderId}                       one purchase; id derived from user + idempotency key
    tickets/{ticketId}                     one admission, "{orderId}-tNN"
    users/{userId}                         email, name
    outbox/{messageId}                     messages to publish, written with the change
    holds/{holdId}                         a cart: tickets held for a user until expires_at
    refunds/{refundId}                     money owed back for cancelled tickets
    events/{eventId}/waitlist/{userId}     a user waiting for tickets of a sold-out event
    trigger_failures/{changeId}            inventory changes whose handler failed every attempt
    events/{eventId}/seats/{seatId}        a sold seat: order, ticket, type (reserved seating)
    events/{eventId}/sections/{sectionId}  taken seats of one section, for clients to listen to
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain.messages import OutboxMessage
from boxoffice.domain.model import (
    BuyerRecord,
    Event,
    Hold,
    HoldStatus,
    InventoryShard,
    Order,
    OrderStatus,
    Refund,
    SaleStatus,
    ShardMove,
    Ticket,
    TicketStatus,
    shard_deltas,
)
from boxoffice.domain.seating import seat_map_from_json, seat_map_to_json
from boxoffice.domain.ticket_types import DEFAULT_POOL_ID, Catalogue, OrderLine, Pool, TicketType

EVENTS = "events"
INVENTORY = "inventory"
BUYERS = "buyers"
ORDERS = "orders"
TICKETS = "tickets"
USERS = "users"
OUTBOX = "outbox"
HOLDS = "holds"
REFUNDS = "refunds"
WAITLIST = "waitlist"
TRIGGER_FAILURES = "trigger_failures"
SEATS = "seats"
SECTIONS = "sections"
SEAT_RELEASES = "seat_releases"


def event_ref(db: firestore.Client, event_id: str) -> firestore.DocumentReference:
    return db.collection(EVENTS).document(event_id)


def inventory_col(db: firestore.Client, event_id: str) -> firestore.CollectionReference:
    return cast(firestore.CollectionReference, event_ref(db, event_id).collection(INVENTORY))


def shard_ref(db: firestore.Client, event_id: str, shard: str) -> firestore.DocumentReference:
    return inventory_col(db, event_id).document(shard)


# Every shard write carries the server's commit time in this field, so a poller can ask for the
# shards changed since a time (one collection-group query) instead of holding a listener on all
# of them. Production needs the collection-group single-field index on it (firestore.indexes.json).
SHARD_CHANGED_AT = "changed_at"


def shards_changed_since(db: firestore.Client, since: datetime) -> Any:
    """Every inventory shard, of every event, written at or after ``since`` (server time)."""
    return db.collection_group(INVENTORY).where(filter=FieldFilter(SHARD_CHANGED_AT, ">=", since))


def buyer_ref(db: firestore.Client, event_id: str, user_id: str) -> firestore.DocumentReference:
    return cast(firestore.DocumentReference, event_ref(db, event_id).collection(BUYERS).document(user_id))


def order_ref(db: firestore.Client, order_id: str) -> firestore.DocumentReference:
    return db.collection(ORDERS).document(order_id)


def ticket_ref(db: firestore.Client, ticket_id: str) -> firestore.DocumentReference:
    return db.collection(TICKETS).document(ticket_id)


def user_ref(db: firestore.Client, user_id: str) -> firestore.DocumentReference:
    return db.collection(USERS).document(user_id)


def outbox_ref(db: firestore.Client, message_id: str) -> firestore.DocumentReference:
    return db.collection(OUTBOX).document(message_id)


def hold_ref(db: firestore.Client, hold_id: str) -> firestore.DocumentReference:
    return db.collection(HOLDS).document(hold_id)


def refund_ref(db: firestore.Client, refund_id: str) -> firestore.DocumentReference:
    return db.collection(REFUNDS).document(refund_id)


def waitlist_col(db: firestore.Client, event_id: str) -> firestore.CollectionReference:
    return cast(firestore.CollectionReference, event_ref(db, event_id).collection(WAITLIST))


def seats_col(db: firestore.Client, event_id: str) -> firestore.CollectionReference:
    return cast(firestore.CollectionReference, event_ref(db, event_id).collection(SEATS))


def seat_ref(db: firestore.Client, event_id: str, seat: str) -> firestore.DocumentReference:
    """``events/{e}/seats/{section:row:number}``: exists while the seat is sold (created, never
    overwritten, by the allocator in the commit that sells it)."""
    return seats_col(db, event_id).document(seat)


def section_ref(db: firestore.Client, event_id: str, section: str) -> firestore.DocumentReference:
    """``events/{e}/sections/{section}``: the display copy of a section's taken seats."""
    return cast(firestore.DocumentReference, event_ref(db, event_id).collection(SECTIONS).document(section))


def seat_releases_col(db: firestore.Client, event_id: str) -> firestore.CollectionReference:
    """``events/{e}/seat_releases/{id}``: seats freed by a cancellation or a hold's end, created in
    the commit that deletes their seat documents; the allocator frees them in its seat book and
    deletes the marker in a fenced commit (``services.allocator``)."""
    return cast(firestore.CollectionReference, event_ref(db, event_id).collection(SEAT_RELEASES))


def trigger_failure_ref(db: firestore.Client, change_id: str) -> firestore.DocumentReference:
    return db.collection(TRIGGER_FAILURES).document(change_id)


# --- converters -------------------------------------------------------------------------


def event_to_doc(event: Event) -> dict[str, Any]:
    return {
        "name": event.name,
        "venue": event.venue,
        "starts_at": event.starts_at,
        "price": event.price,
        "currency": event.currency,
        "capacity": event.capacity,
        "per_order_max": event.per_order_max,
        "per_user_limit": event.per_user_limit,
        "shard_count": event.shard_count,
        "status": event.status.value,
        "hold_minutes": event.hold_minutes,
        "low_stock_threshold": event.low_stock_threshold,
        "created_at": event.created_at or firestore.SERVER_TIMESTAMP,
        "organiser_id": event.organiser_id,
    } | ({} if event.catalogue is None else {"ticket_types": catalogue_to_doc(event.catalogue)}) | (
        {} if event.seat_map is None else {"seat_map": seat_map_to_json(event.seat_map)})


def catalogue_to_doc(catalogue: Catalogue) -> dict[str, Any]:
    return {
        "types": [{"id": t.id, "name": t.name, "price": t.price, "currency": t.currency, "pool": t.pool_id,
                   "per_order_max": t.per_order_max, "per_user_limit": t.per_user_limit, "cap": t.cap,
                   "opens_at": t.opens_at, "closes_at": t.closes_at, "seated": t.seated}
                  for t in catalogue.types],
        "pools": [{"id": p.id, "capacity": p.capacity} for p in catalogue.pools],
    }


def catalogue_from_doc(doc: dict[str, Any]) -> Catalogue:
    """A catalogue as it was validated when the event was written."""
    return Catalogue(
        types=tuple(TicketType(id=t["id"], name=t["name"], price=t["price"], currency=t["currency"],
                               pool_id=t["pool"], per_order_max=t["per_order_max"],
                               per_user_limit=t["per_user_limit"], cap=t.get("cap"),
                               opens_at=t.get("opens_at"), closes_at=t.get("closes_at"),
                               seated=bool(t.get("seated"))) for t in doc["types"]),
        pools=tuple(Pool(p["id"], p["capacity"]) for p in doc["pools"]),
    )


def event_from_doc(event_id: str, doc: dict[str, Any]) -> Event:
    return Event(
        id=event_id,
        name=doc["name"],
        venue=doc["venue"],
        starts_at=doc["starts_at"],
        price=doc["price"],
        currency=doc["currency"],
        capacity=doc["capacity"],
        per_order_max=doc["per_order_max"],
        per_user_limit=doc["per_user_limit"],
        shard_count=doc["shard_count"],
        status=SaleStatus(doc["status"]),
        hold_minutes=doc.get("hold_minutes", 10),
        low_stock_threshold=doc.get("low_stock_threshold", 0),
        created_at=doc.get("created_at"),
        organiser_id=doc.get("organiser_id"),
        catalogue=catalogue_from_doc(doc["ticket_types"]) if doc.get("ticket_types") else None,
        seat_map=seat_map_from_json(doc["seat_map"]) if doc.get("seat_map") else None,
    )


def shard_to_doc(shard: InventoryShard) -> dict[str, Any]:
    return {
        "capacity": shard.capacity,
        "available": shard.available,
        "held": shard.held,
        "sold": shard.sold,
        SHARD_CHANGED_AT: firestore.SERVER_TIMESTAMP,
    } | ({} if shard.pool == DEFAULT_POOL_ID else {"pool": shard.pool})


def shard_from_doc(shard_id: str, doc: dict[str, Any]) -> InventoryShard:
    return InventoryShard(
        id=shard_id,
        capacity=doc["capacity"],
        available=doc["available"],
        held=doc.get("held", 0),
        sold=doc.get("sold", 0),
        pool=doc.get("pool") or DEFAULT_POOL_ID,
    )


def order_to_doc(order: Order) -> dict[str, Any]:
    return {
        "event_id": order.event_id,
        "user_id": order.user_id,
        "quantity": order.quantity,
        "cancelled_quantity": order.cancelled_quantity,
        "unit_price": order.unit_price,
        "amount": order.amount,
        "currency": order.currency,
        "allocations": dict(order.allocations),
        "idempotency_key": order.idempotency_key,
        "ticket_ids": list(order.ticket_ids),
        "status": order.status.value,
        "hold_id": order.hold_id,
        "created_at": order.created_at or firestore.SERVER_TIMESTAMP,
        # Commit time as the database saw it: the clock that delivery lags are measured against.
        "committed_at": firestore.SERVER_TIMESTAMP,
    } | ({"lines": _lines_to_doc(order.lines)} if order.lines else {})


def _lines_to_doc(lines: tuple[OrderLine, ...]) -> list[dict[str, Any]]:
    return [{"type_id": ln.type_id, "quantity": ln.quantity, "unit_price": ln.unit_price,
             "currency": ln.currency, "seat_ids": list(ln.seat_ids)} for ln in lines]


def _lines_from_doc(doc: dict[str, Any]) -> tuple[OrderLine, ...]:
    return tuple(OrderLine(ln["type_id"], ln["quantity"], ln["unit_price"], ln["currency"],
                           tuple(ln.get("seat_ids", ()))) for ln in doc.get("lines", ()))


def order_from_doc(order_id: str, doc: dict[str, Any]) -> Order:
    created: datetime | None = doc.get("created_at")
    return Order(
        id=order_id,
        event_id=doc["event_id"],
        user_id=doc["user_id"],
        quantity=doc["quantity"],
        unit_price=doc["unit_price"],
        currency=doc["currency"],
        allocations=dict(doc.get("allocations", {})),
        idempotency_key=doc["idempotency_key"],
        ticket_ids=tuple(doc.get("ticket_ids", ())),
        status=OrderStatus(doc["status"]),
        cancelled_quantity=doc.get("cancelled_quantity", 0),
        created_at=created,
        hold_id=doc.get("hold_id"),
        lines=_lines_from_doc(doc),
    )


def ticket_to_doc(ticket: Ticket) -> dict[str, Any]:
    return {
        "order_id": ticket.order_id,
        "event_id": ticket.event_id,
        "user_id": ticket.user_id,
        "code": ticket.code,
        "status": ticket.status.value,
        "created_at": firestore.SERVER_TIMESTAMP,
    } | ({"type_id": ticket.type_id} if ticket.type_id else {}) | (
        dict(zip(("section", "row", "seat_number"), ticket.section_row_number, strict=True)) | {"seat": ticket.seat}
        if ticket.section_row_number else {})


def ticket_from_doc(ticket_id: str, doc: dict[str, Any]) -> Ticket:
    return Ticket(
        id=ticket_id,
        order_id=doc["order_id"],
        event_id=doc["event_id"],
        user_id=doc["user_id"],
        code=doc["code"],
        status=TicketStatus(doc["status"]),
        type_id=doc.get("type_id"),
        seat=doc.get("seat"),
    )


def buyer_from_doc(event_id: str, user_id: str, doc: dict[str, Any] | None) -> BuyerRecord:
    if doc is None:
        return BuyerRecord(event_id=event_id, user_id=user_id)
    return BuyerRecord(
        event_id=event_id,
        user_id=user_id,
        tickets=doc.get("tickets", 0),
        order_ids=tuple(doc.get("order_ids", ())),
        held=doc.get("held", 0),
        types=dict(doc.get("types") or {}),
        held_types=dict(doc.get("held_types") or {}),
    )


def buyer_to_doc(buyer: BuyerRecord) -> dict[str, Any]:
    return {
        "event_id": buyer.event_id,
        "user_id": buyer.user_id,
        "tickets": buyer.tickets,
        "order_ids": list(buyer.order_ids),
        "held": buyer.held,
        "updated_at": firestore.SERVER_TIMESTAMP,
    }


def outbox_to_doc(message: OutboxMessage) -> dict[str, Any]:
    return {
        "topic": message.topic,
        "type": message.type,
        "event_id": message.event_id,
        "ordering_key": message.ordering_key,
        "payload": message.payload,
        "created_at": firestore.SERVER_TIMESTAMP,
        "published_at": None,
        "publish_attempts": 0,
    }


def shard_move(move: ShardMove, quantity: int) -> dict[str, Any]:
    """A shard update as server-side increments.

    Used for moves of tickets a shard already counts as held or sold: applied atomically by
    the server, they need no precondition on the shard, so they never make a buyer's
    purchase of that shard fail more than once (its own precondition sees the new counts).
    Like every shard write it stamps ``changed_at`` with the commit time (``shards_changed_since``).
    """
    return {k: firestore.Increment(v) for k, v in shard_deltas(move, quantity).items()} | {
        SHARD_CHANGED_AT: firestore.SERVER_TIMESTAMP}


def hold_to_doc(hold: Hold) -> dict[str, Any]:
    return {
        "event_id": hold.event_id,
        "user_id": hold.user_id,
        "quantity": hold.quantity,
        "allocations": dict(hold.allocations),
        "expires_at": hold.expires_at,
        "status": hold.status.value,
        "idempotency_key": hold.idempotency_key,
        "order_id": hold.order_id,
        "created_at": hold.created_at or firestore.SERVER_TIMESTAMP,
    } | ({"lines": _lines_to_doc(hold.lines)} if hold.lines else {})


def hold_from_doc(hold_id: str, doc: dict[str, Any]) -> Hold:
    return Hold(
        id=hold_id,
        event_id=doc["event_id"],
        user_id=doc["user_id"],
        quantity=doc["quantity"],
        allocations=dict(doc.get("allocations", {})),
        expires_at=doc["expires_at"],
        status=HoldStatus(doc["status"]),
        idempotency_key=doc.get("idempotency_key", ""),
        order_id=doc.get("order_id"),
        created_at=doc.get("created_at"),
        lines=_lines_from_doc(doc),
    )


def refund_to_doc(refund: Refund) -> dict[str, Any]:
    return {
        "order_id": refund.order_id,
        "event_id": refund.event_id,
        "user_id": refund.user_id,
        "ticket_ids": list(refund.ticket_ids),
        "quantity": refund.quantity,
        "amount": refund.amount,
        "currency": refund.currency,
        "by_organiser": refund.by_organiser,
        "status": refund.status,
        "created_at": firestore.SERVER_TIMESTAMP,
    }
