"""How an outbox message travels on Pub/Sub, and how a subscriber reads it back.

data:        the payload as JSON (UTF-8)
attributes:  message_id  the outbox document id: stable, the subscribers' idempotency key
             type        e.g. "order.confirmed" (subscription filters match on it)
             event_id    also the ordering key
             created_at  the outbox commit time (ISO 8601, UTC): analytics' minute buckets and
                         the start of the purchase-to-email lag
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Delivered:
    """One message as a handler sees it, whatever transport brought it."""

    message_id: str
    type: str
    event_id: str
    payload: dict[str, Any]
    created_at: datetime | None = None
    delivery_attempt: int = 0  # from Pub/Sub when a dead-letter policy is set, else 0
    attributes: dict[str, str] = field(default_factory=dict)


def encode(message_id: str, doc: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """(data, attributes) for an outbox document."""
    created = doc.get("created_at")
    attrs = {
        "message_id": message_id,
        "type": str(doc["type"]),
        "event_id": str(doc.get("event_id") or ""),
    }
    if isinstance(created, datetime):
        attrs["created_at"] = created.isoformat()
    return json.dumps(doc.get("payload") or {}, separators=(",", ":"), default=str).encode(), attrs


class UndecodableMessage(ValueError):
    """The message cannot be read (no message id, not JSON): a poison message."""


def decode(data: bytes, attributes: dict[str, str], delivery_attempt: int = 0) -> Delivered:
    attrs = dict(attributes)
    if not attrs.get("message_id"):
        raise UndecodableMessage("no message_id attribute")
    try:
        payload = json.loads(data.decode() or "{}")
    except (UnicodeDecodeError, ValueError) as exc:
        raise UndecodableMessage(f"payload is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise UndecodableMessage("payload is not a JSON object")
    created = None
    if attrs.get("created_at"):
        try:
            created = datetime.fromisoformat(attrs["created_at"])
        except ValueError:
            created = None
    return Delivered(
        message_id=attrs["message_id"],
        type=attrs.get("type", ""),
        event_id=attrs.get("event_id") or str(payload.get("event_id", "")),
        payload=payload,
        created_at=created,
        delivery_attempt=delivery_attempt or 0,
        attributes=attrs,
    )
