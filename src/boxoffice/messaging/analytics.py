"""Sales analytics per event, kept by a subscriber: tickets sold, revenue, cancellations,
refunds and tickets sold per minute.

Guarantee: each message is counted exactly once. The counters and the processed-message record
are written in ONE commit, the record with ``create``: a redelivered message fails that
precondition and the whole commit is refused, so nothing is counted twice; no lock is taken, so
concurrent handlers never wait on each other. Counters live in ``ANALYTICS_SHARD_COUNT`` shards
(chosen by a hash of the message id) and are summed on read.

Batches (``handle_analytics_batch``, what the worker runs): a pulled batch is folded into one
commit per event (up to ``max_per_commit`` messages): a ``create`` of every message's processed
record plus the summed increments on one counter shard. The first commit is blind (a first
delivery has no record: nothing is read). Because one failing ``create`` refuses the whole
commit, a redelivered message in the batch makes it fail with nothing applied: the records are
read then (one ``get_all``) and the commit is retried without the messages already counted
(again if another worker counted one meanwhile).

Semantics of the payloads (shared with the inventory branch):
- ``order.confirmed``: quantity tickets sold, amount (minor units) of revenue, one order;
- ``order.cancelled``: quantity tickets cancelled, amount refunded (if absent: quantity x
  unit_price), one cancellation. Gross figures are kept; net = gross - cancelled.
- events with ticket types: the same per type, from the messages' ``types`` (tickets and amount
  of each type in the order or the refund), kept in the counter shards' ``types`` map.
The minute of a sale is the minute of its outbox commit (the ``created_at`` attribute).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from boxoffice.domain.messages import MessageType
from boxoffice.messaging.topology import ANALYTICS, ANALYTICS_TYPES
from boxoffice.messaging.wire import Delivered
from boxoffice.store.encoded_batch import EncodedWriteBatch
from boxoffice.store.messaging import analytics_shard_ref, analytics_shards_col, processed_ref

SUBSCRIPTION = ANALYTICS
HANDLED = ANALYTICS_TYPES
TYPE_COUNTERS = ("orders", "tickets_sold", "revenue", "tickets_cancelled", "refunds")  # per ticket type


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
    # events with ticket types: per type, orders, tickets_sold, revenue, tickets_cancelled, refunds
    types: dict[str, dict[str, int]] = field(default_factory=dict)

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
            "types": {t: dict(c) for t, c in sorted(self.types.items())},
        }


def _minute_key(when: datetime | None) -> str:
    when = (when or datetime.now(UTC)).astimezone(UTC)
    return when.strftime("%Y%m%d%H%M")  # no ':' or '.' : a plain map key in Firestore


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _fold(messages: Iterable[Delivered]) -> dict[str, Any]:
    """The counter increments of some messages of one event, summed."""
    totals: dict[str, int] = {}
    per_minute: dict[str, int] = {}
    per_type: dict[str, dict[str, int]] = {}
    currency = None
    for d in messages:
        p = d.payload
        qty = _int(p.get("quantity"))
        amount = _int(p["amount"]) if "amount" in p else qty * _int(p.get("unit_price"))
        confirmed = d.type == MessageType.ORDER_CONFIRMED
        if confirmed:
            adds = {"orders": 1, "tickets_sold": qty, "revenue": amount}
            minute = _minute_key(d.created_at)
            per_minute[minute] = per_minute.get(minute, 0) + qty
        else:
            adds = {"cancellations": 1, "tickets_cancelled": qty, "refunds": amount}
        for k, v in adds.items():
            totals[k] = totals.get(k, 0) + v
        for type_id, line in (p.get("types") or {}).items():
            row = per_type.setdefault(str(type_id), {})
            type_adds = ({"orders": 1, "tickets_sold": _int(line.get("quantity")), "revenue": _int(line.get("amount"))}
                         if confirmed else
                         {"tickets_cancelled": _int(line.get("quantity")), "refunds": _int(line.get("amount"))})
            for k, v in type_adds.items():
                row[k] = row.get(k, 0) + v
        currency = currency or p.get("currency")
    counters: dict[str, Any] = {k: firestore.Increment(v) for k, v in totals.items()}
    if per_minute:
        counters["per_minute"] = {m: firestore.Increment(n) for m, n in per_minute.items()}
    if per_type:
        counters["types"] = {t: {k: firestore.Increment(v) for k, v in row.items()} for t, row in per_type.items()}
    if currency:
        counters["currency"] = currency
    return counters


def _commit(db: firestore.Client, event_id: str, messages: list[Delivered]) -> None:
    """One commit: every message's processed record (``create``) and their summed counters on
    one counter shard (a stable hash of the first message id)."""
    batch = EncodedWriteBatch(db)  # hundreds of writes: encoded straight to protobuf
    for d in messages:
        batch.create(processed_ref(db, SUBSCRIPTION, d.message_id), {
            "subscription": SUBSCRIPTION, "message_id": d.message_id, "type": d.type, "event_id": d.event_id,
            "processed_at": firestore.SERVER_TIMESTAMP, "outcome": "counted",
        })
    batch.set(analytics_shard_ref(db, event_id, messages[0].message_id), _fold(messages), merge=True)
    batch.commit()


def _already_counted(db: firestore.Client, messages: list[Delivered]) -> set[str]:
    refs = [processed_ref(db, SUBSCRIPTION, d.message_id) for d in messages]
    by_path = {ref.path: d.message_id for ref, d in zip(refs, messages, strict=False)}
    return {by_path[snap.reference.path] for snap in db.get_all(refs) if snap.exists}


def handle_analytics_batch(db: firestore.Client, messages: list[Delivered], *,
                           max_per_commit: int = 500, attempts: int = 4) -> dict[str, str | BaseException]:
    """Count a batch of distinct messages: "counted", "duplicate" or "ignored" per message id
    (or the error of its event's commit, to be retried). See the module docstring.

    The first commit of each chunk is blind: nothing is read before it (a first delivery, the
    usual case, has no processed record). If a record exists (a redelivery, or another worker
    counting the same message), the commit fails as a whole with nothing applied; the records
    are read then, and the chunk is committed again without the messages already counted."""
    out: dict[str, str | BaseException] = {d.message_id: "ignored" for d in messages if d.type not in HANDLED}
    by_event: dict[str, list[Delivered]] = {}
    for d in messages:
        if d.type in HANDLED:
            by_event.setdefault(d.event_id, []).append(d)
    for event_id, group in by_event.items():
        for i in range(0, len(group), max_per_commit):
            chunk = group[i:i + max_per_commit]
            for attempt in range(attempts):
                try:
                    _commit(db, event_id, chunk)
                    out.update({d.message_id: "counted" for d in chunk})
                    break
                except gexc.AlreadyExists as exc:  # another worker counted one of them: nothing applied
                    again = _already_counted(db, chunk)
                    out.update({d.message_id: "duplicate" for d in chunk if d.message_id in again})
                    chunk = [d for d in chunk if d.message_id not in again]
                    if not chunk:
                        break
                    if attempt == attempts - 1:
                        out.update({d.message_id: exc for d in chunk})
                except Exception as exc:  # noqa: BLE001 - this commit's messages are retried (nack)
                    out.update({d.message_id: exc for d in chunk})
                    break
    return out


def handle_analytics(db: firestore.Client, d: Delivered) -> str:
    """Count one message (the Cloud Function path). Returns "counted", "duplicate" or "ignored"."""
    result = handle_analytics_batch(db, [d])[d.message_id]
    if isinstance(result, BaseException):
        raise result
    return result


def read_stats(db: firestore.Client, event_id: str) -> EventStats:
    """Sum the counter shards of an event (all zero when nothing was counted yet)."""
    totals: dict[str, int] = {}
    per_minute: dict[str, int] = {}
    types: dict[str, dict[str, int]] = {}
    currency = None
    for snap in analytics_shards_col(db, event_id).stream():
        doc = snap.to_dict() or {}
        for k in ("orders", "tickets_sold", "revenue", "cancellations", "tickets_cancelled", "refunds"):
            totals[k] = totals.get(k, 0) + _int(doc.get(k))
        for minute, n in (doc.get("per_minute") or {}).items():
            key = f"{minute[0:4]}-{minute[4:6]}-{minute[6:8]}T{minute[8:10]}:{minute[10:12]}"
            per_minute[key] = per_minute.get(key, 0) + _int(n)
        for type_id, counts in (doc.get("types") or {}).items():
            row = types.setdefault(type_id, {k: 0 for k in TYPE_COUNTERS})
            for k in TYPE_COUNTERS:
                row[k] += _int((counts or {}).get(k))
        currency = currency or doc.get("currency")
    return EventStats(event_id=event_id, currency=currency, per_minute=per_minute, types=types, **totals)
