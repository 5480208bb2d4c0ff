"""Messages the system emits after a state change, written to the outbox in the same commit.

A message id is stable (derived from what happened, not random), so a message published twice
is recognised as the same message by every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from boxoffice.domain.model import Order, Refund, ticket_prices_of, ticket_types_of

TICKET_EVENTS_TOPIC = "ticket-events"
SCHEMA_VERSION = 1


class MessageType:
    ORDER_CONFIRMED = "order.confirmed"
    ORDER_CANCELLED = "order.cancelled"
    TICKETS_RELEASED = "tickets.released"
    SOLD_OUT = "inventory.sold_out"
    LOW_STOCK = "inventory.low_stock"
    BACK_IN_STOCK = "inventory.back_in_stock"
    WAITLIST_OFFER = "waitlist.offer"
    SALE_STATUS_CHANGED = "sale.status_changed"


@dataclass(frozen=True)
class OutboxMessage:
    id: str
    type: str
    event_id: str
    payload: dict[str, Any]
    topic: str = TICKET_EVENTS_TOPIC

    @property
    def ordering_key(self) -> str:
        """Messages of one event are delivered in order (Pub/Sub ordering key)."""
        return self.event_id


def order_confirmed(order: Order) -> OutboxMessage:
    return OutboxMessage(
        id=f"{order.id}.confirmed",
        type=MessageType.ORDER_CONFIRMED,
        event_id=order.event_id,
        payload={
            "schema": SCHEMA_VERSION,
            "order_id": order.id,
            "event_id": order.event_id,
            "user_id": order.user_id,
            "quantity": order.quantity,
            "unit_price": order.unit_price,
            "amount": order.amount,
            "currency": order.currency,
            "ticket_ids": list(order.ticket_ids),
            "hold_id": order.hold_id,
        } | ({"types": {line.type_id: {"quantity": line.quantity, "amount": line.amount} for line in order.lines}}
             if order.lines else {}),
    )


def order_cancelled(order: Order, refund: Refund) -> OutboxMessage:
    """Tickets of an order were voided and a refund recorded (``order`` is the order after it)."""
    return OutboxMessage(
        id=f"{refund.id}.cancelled",
        type=MessageType.ORDER_CANCELLED,
        event_id=order.event_id,
        payload={
            "schema": SCHEMA_VERSION,
            "order_id": order.id,
            "event_id": order.event_id,
            "user_id": order.user_id,
            "quantity": refund.quantity,
            "amount": refund.amount,
            "currency": refund.currency,
            "ticket_ids": list(refund.ticket_ids),
            "refund_id": refund.id,
            "by_organiser": refund.by_organiser,
            "order_status": order.status.value,
            "remaining_quantity": order.active_quantity,
        } | ({"types": _refund_types(order, refund)} if order.lines else {}),
    )


def _refund_types(order: Order, refund: Refund) -> dict[str, dict[str, int]]:
    """Per ticket type, the tickets and amount of a refund."""
    types, prices = ticket_types_of(order), ticket_prices_of(order)
    out: dict[str, dict[str, int]] = {}
    for ticket in refund.ticket_ids:
        row = out.setdefault(types[ticket], {"quantity": 0, "amount": 0})
        row["quantity"] += 1
        row["amount"] += prices[ticket]
    return out


def tickets_released(event_id: str, release_id: str, quantity: int, capacity: int) -> OutboxMessage:
    """The organiser added ``quantity`` tickets; ``capacity`` is the new total."""
    return OutboxMessage(
        id=f"{event_id}.{release_id}.released",
        type=MessageType.TICKETS_RELEASED,
        event_id=event_id,
        payload={
            "schema": SCHEMA_VERSION,
            "event_id": event_id,
            "release_id": release_id,
            "quantity": quantity,
            "capacity": capacity,
        },
    )


def sale_status_changed(event_id: str, status: str, previous: str, change_id: str) -> OutboxMessage:
    return OutboxMessage(
        id=f"{event_id}.status.{change_id}",
        type=MessageType.SALE_STATUS_CHANGED,
        event_id=event_id,
        payload={"schema": SCHEMA_VERSION, "event_id": event_id, "status": status, "previous": previous},
    )


def inventory_notice(kind: str, event_id: str, summary_key: str, summary: dict[str, Any]) -> OutboxMessage:
    """``inventory.sold_out`` / ``.low_stock`` / ``.back_in_stock``, one per summary write that saw it.

    ``summary_key`` identifies the summary write (its snapshot time), so a change delivered
    twice cannot announce the same transition twice.
    """
    return OutboxMessage(
        id=f"{event_id}.{kind.split('.')[-1]}.{summary_key}",
        type=kind,
        event_id=event_id,
        payload={
            "schema": SCHEMA_VERSION,
            "event_id": event_id,
            "available": summary["available"],
            "held": summary["held"],
            "sold": summary["sold"],
            "capacity": summary["capacity"],
            "quantity": summary["available"],
        },
    )


def waitlist_offer(event_id: str, user_id: str, offer_id: str, available: int,
                   type_id: str | None = None) -> OutboxMessage:
    """Tickets came back (of ``type_id``, for a waiter of one ticket type): tell a waiting user
    (delivered as an email by messaging)."""
    return OutboxMessage(
        id=f"{event_id}.offer.{user_id}.{offer_id}",
        type=MessageType.WAITLIST_OFFER,
        event_id=event_id,
        payload={
            "schema": SCHEMA_VERSION,
            "event_id": event_id,
            "user_id": user_id,
            "offer_id": offer_id,
            "quantity": available,
        } | ({"type_id": type_id} if type_id else {}),
    )
