"""Messages the system emits after a state change, written to the outbox in the same commit.

A message id is stable (derived from what happened, not random), so a message published twice
is recognised as the same message by every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from boxoffice.domain.model import Order

TICKET_EVENTS_TOPIC = "ticket-events"
SCHEMA_VERSION = 1


class MessageType:
    ORDER_CONFIRMED = "order.confirmed"
    ORDER_CANCELLED = "order.cancelled"
    TICKETS_RELEASED = "tickets.released"


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
        },
    )
