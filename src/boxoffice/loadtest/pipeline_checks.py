"""Checks and figures of the whole pipeline, for the simulator (`boxoffice simulate --pipeline`)
and for operators (``drain`` and ``backlog`` live in messaging/backlog.py):
``audit_pipeline`` (problems; empty = ok), ``pipeline_figures`` (throughput and lag) and
``measure_raw_consume_rate`` (the emulator's own ceiling, for the ratio).
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.messaging import deadletter
from boxoffice.messaging.analytics import read_stats
from boxoffice.messaging.topology import (
    Topology,
    default_topology,
    publisher_client,
    subscriber_client,
)
from boxoffice.runtime.mailbox import Mailbox
from boxoffice.store.documents import ORDERS, OUTBOX, REFUNDS, order_from_doc
from boxoffice.store.messaging import EMAILS, PROCESSED


def audit_pipeline(db: firestore.Client, event_id: str, mailbox: Mailbox, *, topology: Topology | None = None,
                   subscriber: Any = None, check_dead_letters: bool = True) -> list[str]:
    """What is wrong with the pipeline's effects for one event; an empty list means all is well.

    - every order of the event has exactly one confirmation email (distinct Message-IDs: a resend
      after a crash reuses the Message-ID and is not counted twice), and no email names an
      order that does not exist;
    - every ``order.cancelled`` message of the event has exactly one cancellation email;
    - analytics equal the orders: orders, tickets sold, revenue, tickets cancelled, refunds;
    - the outbox holds nothing unpublished for the event;
    - no email record is stuck in ``sending``/``failed`` or skipped for lack of an address;
    - the dead-letter topic is empty."""
    problems: list[str] = []
    orders = {s.id: s.to_dict() or {} for s in
              db.collection(ORDERS).where(filter=FieldFilter("event_id", "==", event_id)).stream()}
    outbox = {s.id: s.to_dict() or {} for s in
              db.collection(OUTBOX).where(filter=FieldFilter("event_id", "==", event_id)).stream()}

    mails = [m for m in mailbox.distinct() if m.event_id == event_id]
    confirmations: Counter[str] = Counter(m.order_id for m in mails if m.kind == "order_confirmed")
    for oid in orders:
        n = confirmations.get(oid, 0)
        if n != 1:
            problems.append(f"order {oid}: {n} confirmation emails, expected 1")
    for oid in set(confirmations) - set(orders):
        problems.append(f"confirmation email for unknown order {oid}")
    cancel_mails: Counter[str] = Counter(m.source_message for m in mails if m.kind == "order_cancelled")
    cancel_msgs = {mid for mid, d in outbox.items() if d.get("type") == "order.cancelled"}
    for mid in cancel_msgs:
        n = cancel_mails.get(mid, 0)
        if n != 1:
            problems.append(f"cancellation {mid}: {n} cancellation emails, expected 1")
    for mid in set(cancel_mails) - cancel_msgs:
        problems.append(f"cancellation email for unknown message {mid}")

    stats = read_stats(db, event_id)
    truth = {
        "orders": len(orders),
        "tickets_sold": sum(int(o.get("quantity", 0)) for o in orders.values()),
        "revenue": sum(order_from_doc(oid, o).amount for oid, o in orders.items()),
        "tickets_cancelled": sum(int(o.get("cancelled_quantity", 0)) for o in orders.values()),
        "refunds": _refunded(db, event_id, orders),
        "cancellations": len(cancel_msgs),
    }
    for key, want in truth.items():
        got = getattr(stats, key)
        if got != want:
            problems.append(f"analytics {key}={got}, orders say {want}")
    per_type: dict[str, dict[str, int]] = {}
    for o in orders.values():
        for line in o.get("lines") or ():
            row = per_type.setdefault(line["type_id"], {"orders": 0, "tickets_sold": 0, "revenue": 0})
            row["orders"] += 1
            row["tickets_sold"] += int(line["quantity"])
            row["revenue"] += int(line["quantity"]) * int(line["unit_price"])
    for type_id, want_row in per_type.items():
        got_row = stats.types.get(type_id, {})
        for key, want in want_row.items():
            if got_row.get(key, 0) != want:
                problems.append(f"analytics of type {type_id}: {key}={got_row.get(key, 0)}, orders say {want}")
    if sum(stats.per_minute.values()) != truth["tickets_sold"]:
        problems.append(f"analytics per-minute sales add up to {sum(stats.per_minute.values())}, "
                        f"tickets sold {truth['tickets_sold']}")

    unpublished = [mid for mid, d in outbox.items() if d.get("published_at") is None]
    if unpublished:
        problems.append(f"{len(unpublished)} outbox messages unpublished, e.g. {unpublished[:3]}")
    for s in db.collection(EMAILS).where(filter=FieldFilter("event_id", "==", event_id)).stream():
        d = s.to_dict() or {}
        if d.get("status") not in ("sent",):
            problems.append(f"email {s.id}: status {d.get('status')} ({d.get('reason') or d.get('last_error') or ''})")

    if check_dead_letters:
        topology = topology or default_topology()
        n = deadletter.dead_letter_count(subscriber or subscriber_client(), topology)
        if n:
            problems.append(f"dead-letter topic holds {n} messages")
    return problems


@dataclass(frozen=True)
class PipelineFigures:
    messages: int  # processed-message records of the event (all subscriptions)
    window_s: float  # first outbox commit -> last message handled
    messages_per_s: float
    handling_s: float  # first message handled -> last message handled
    handled_per_s: float
    emails: int
    lag_p50_s: float | None  # order commit -> confirmation email sent
    lag_p99_s: float | None
    lag_max_s: float | None
    publish_lag_p50_s: float | None = None  # outbox commit -> Pub/Sub acknowledged the relay's publish
    publish_lag_p99_s: float | None = None
    marked_lag_p99_s: float | None = None  # outbox commit -> the relay's marking commit (published_at)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def pipeline_figures(db: firestore.Client, event_id: str) -> PipelineFigures:
    """Throughput and lag of the pipeline for one event (read after ``drain``)."""
    processed = [s.to_dict() or {} for s in
                 db.collection(PROCESSED).where(filter=FieldFilter("event_id", "==", event_id)).stream()]
    outbox = [s.to_dict() or {} for s in db.collection(OUTBOX).where(filter=FieldFilter("event_id", "==", event_id)).stream()]
    starts = [d["created_at"] for d in outbox if isinstance(d.get("created_at"), datetime)]
    publish_lags = sorted((d["acked_at"] - d["created_at"]).total_seconds() for d in outbox
                          if isinstance(d.get("created_at"), datetime) and isinstance(d.get("acked_at"), datetime))
    marked_lags = sorted((d["published_at"] - d["created_at"]).total_seconds() for d in outbox
                         if isinstance(d.get("created_at"), datetime) and isinstance(d.get("published_at"), datetime))
    ends = [d["processed_at"] for d in processed if isinstance(d.get("processed_at"), datetime)]
    window = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    handling = (max(ends) - min(ends)).total_seconds() if ends else 0.0
    committed = {s.id: (s.to_dict() or {}).get("committed_at") for s in
                 db.collection(ORDERS).where(filter=FieldFilter("event_id", "==", event_id)).stream()}
    lags: list[float] = []
    emails = 0
    for s in db.collection(EMAILS).where(filter=FieldFilter("event_id", "==", event_id)).stream():
        d = s.to_dict() or {}
        if d.get("status") != "sent":
            continue
        emails += 1
        c = committed.get(str(d.get("order_id")))
        if d.get("kind") == "order_confirmed" and isinstance(c, datetime) and isinstance(d.get("sent_at"), datetime):
            lags.append((d["sent_at"] - c).total_seconds())
    lags.sort()
    return PipelineFigures(
        messages=len(processed), window_s=window,
        messages_per_s=len(processed) / window if window > 0 else 0.0,
        handling_s=handling, handled_per_s=len(processed) / handling if handling > 0 else 0.0, emails=emails,
        lag_p50_s=_pct(lags, 50), lag_p99_s=_pct(lags, 99), lag_max_s=lags[-1] if lags else None,
        publish_lag_p50_s=_pct(publish_lags, 50), publish_lag_p99_s=_pct(publish_lags, 99),
        marked_lag_p99_s=_pct(marked_lags, 99),
    )


@dataclass(frozen=True)
class ConsumeRate:
    messages: int
    seconds: float
    per_s: float
    ordered: bool
    extra: dict[str, Any] = field(default_factory=dict)


def measure_raw_consume_rate(n: int, *, project: str | None = None, ordered: bool = False,
                             payload_bytes: int = 400, threads: int = 8, timeout_s: float = 300.0) -> ConsumeRate:
    """The emulator's ceiling: publish ``n`` messages (like the pipeline's, one ordering key when
    ``ordered``) to a fresh topic, then time a streaming-pull subscriber that only acks them.
    The topic and subscription are deleted afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    import google.cloud.pubsub_v1 as pubsub_v1
    from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler


    project = project or default_topology().project
    tag = uuid.uuid4().hex[:8]
    publisher, subscriber = publisher_client(ordering=ordered), subscriber_client()
    topic = f"projects/{project}/topics/raw-rate-{tag}"
    sub = f"projects/{project}/subscriptions/raw-rate-{tag}"
    publisher.create_topic(name=topic)
    subscriber.create_subscription(request={"name": sub, "topic": topic, "ack_deadline_seconds": 60,
                                            "enable_message_ordering": ordered})
    try:
        data = b"x" * payload_bytes
        futures = [publisher.publish(topic, data, ordering_key="event" if ordered else "",
                                     message_id=f"m{i}", type="order.confirmed") for i in range(n)]
        for f in futures:
            f.result(timeout=60)
        got = 0
        lock = threading.Lock()
        done = threading.Event()

        def ack(message: Any) -> None:
            nonlocal got
            message.ack()
            with lock:
                got += 1
                if got >= n:
                    done.set()

        t0 = time.monotonic()
        future = subscriber.subscribe(sub, callback=ack,
                                      scheduler=ThreadScheduler(ThreadPoolExecutor(max_workers=threads)),
                                      flow_control=pubsub_v1.types.FlowControl(max_messages=1000))
        done.wait(timeout_s)
        seconds = time.monotonic() - t0
        future.cancel()
        try:
            future.result(timeout=10)
        except Exception:  # noqa: BLE001 - a cancelled future raises
            pass
        return ConsumeRate(got, seconds, got / seconds if seconds > 0 else 0.0, ordered)
    finally:
        subscriber.delete_subscription(subscription=sub)
        publisher.delete_topic(topic=topic)


def _refunded(db: firestore.Client, event_id: str, orders: dict[str, dict[str, Any]]) -> int:
    """What was refunded: the refund records when an order has ticket types (each line refunded
    at its own price), else cancelled tickets x unit price."""
    if not any(o.get("lines") for o in orders.values()):
        return sum(int(o.get("cancelled_quantity", 0)) * int(o.get("unit_price", 0)) for o in orders.values())
    return sum(int((s.to_dict() or {}).get("amount", 0)) for s in
               db.collection(REFUNDS).where(filter=FieldFilter("event_id", "==", event_id)).stream())
