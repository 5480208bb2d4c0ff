"""Sales analytics per event, kept by a subscriber: tickets sold, revenue, cancellations,
refunds and tickets sold per minute.

Guarantee: each message is counted exactly once. The counters and the processed-message record
are written in ONE commit, the record with ``create``: a redelivered message fails that
precondition and the whole commit is refused, so nothing is counted twice; no lock is taken, so
concurrent handlers never wait on each other. Counters live in ``ANALYTICS_SHARD_COUNT`` shards
(chosen by a hash of the message id) and are summed on read.

Semantics of the payloads (shared with the inventory branch):
- ``order.confirmed``: quantity tickets sold, amount (minor units) of revenue, one order;
- ``order.cancelled``: quantity tickets cancelled, amount refunded (if absent: quantity x
  unit_price), one cancellation. Gross figures are kept; net = gross - cancelled.
The minute of a sale is the minute of its outbox commit (the ``created_at`` attribute).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from boxoffice.domain.messages import MessageType
from boxoffice.messaging.topology import ANALYTICS, ANALYTICS_TYPES
from boxoffice.messaging.wire import Delivered
from boxoffice.store.messaging import analytics_shard_ref, analytics_shards_col, processed_ref

SUBSCRIPTION = ANALYTICS
HANDLED = ANALYTICS_TYPES


@dataclass(frozen=True)
class EventStats:
    event_id: str
    orders: int = 0
    tickets_sold: int = 0
    revenue: int = 0
    cancellations: int = 0
    tickets_cancelled: int = 0
    refunds: int = 0
    currency: str | None = None
    per_minute: dict[str, int] = field(default_factory=dict)  # "YYYY-MM-DDTHH:MM" (UTC) -> tickets

    @property
    def net_tickets(self) -> int:
        return self.tickets_sold - self.tickets_cancelled

    @property
    def net_revenue(self) -> int:
        return self.revenue - self.refunds

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id, "orders": self.orders, "tickets_sold": self.tickets_sold,
            "revenue": self.revenue, "cancellations": self.cancellations,
            "tickets_cancelled": self.tickets_cancelled, "refunds": self.refunds,
            "net_tickets": self.net_tickets, "net_revenue": self.net_revenue, "currency": self.currency,
            "per_minute": dict(sorted(self.per_minute.items())),
        }


def _minute_key(when: datetime | None) -> str:
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return when.strftime("%Y%m%d%H%M")  # no ':' or '.' : a plain map key in Firestore


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def handle_analytics(db: firestore.Client, d: Delivered) -> str:
    """Count one message. Returns "counted", "duplicate" or "ignored"."""
    if d.type not in HANDLED:
        return "ignored"
    p = d.payload
    qty = _int(p.get("quantity"))
    amount = _int(p["amount"]) if "amount" in p else qty * _int(p.get("unit_price"))
    inc = firestore.Increment
    if d.type == MessageType.ORDER_CONFIRMED:
        counters: dict[str, Any] = {"orders": inc(1), "tickets_sold": inc(qty), "revenue": inc(amount),
                                    "per_minute": {_minute_key(d.created_at): inc(qty)}}
    else:
        counters = {"cancellations": inc(1), "tickets_cancelled": inc(qty), "refunds": inc(amount)}
    if p.get("currency"):
        counters["currency"] = p["currency"]
    batch = db.batch()
    batch.create(processed_ref(db, SUBSCRIPTION, d.message_id), {
        "subscription": SUBSCRIPTION, "message_id": d.message_id, "type": d.type, "event_id": d.event_id,
        "processed_at": firestore.SERVER_TIMESTAMP, "outcome": "counted",
    })
    batch.set(analytics_shard_ref(db, d.event_id, d.message_id), counters, merge=True)
    try:
        batch.commit()
    except gexc.AlreadyExists:
        return "duplicate"
    return "counted"


def read_stats(db: firestore.Client, event_id: str) -> EventStats:
    """Sum the counter shards of an event (all zero when nothing was counted yet)."""
    totals: dict[str, int] = {}
    per_minute: dict[str, int] = {}
    currency = None
    for snap in analytics_shards_col(db, event_id).stream():
        doc = snap.to_dict() or {}
        for k in ("orders", "tickets_sold", "revenue", "cancellations", "tickets_cancelled", "refunds"):
            totals[k] = totals.get(k, 0) + _int(doc.get(k))
        for minute, n in (doc.get("per_minute") or {}).items():
            key = f"{minute[0:4]}-{minute[4:6]}-{minute[6:8]}T{minute[8:10]}:{minute[10:12]}"
            per_minute[key] = per_minute.get(key, 0) + _int(n)
        currency = currency or doc.get("currency")
    return EventStats(event_id=event_id, currency=currency, per_minute=per_minute, **totals)
