"""The admission queue: buyers' ticket requests on Cloud Pub/Sub, one ordered queue per event.

    sale-requests.{eventId}            topic; every message has the ordering key {eventId}
      sale-requests.{eventId}.allocator  ordered subscription the event's allocator pulls

Why Pub/Sub (measured against Firestore request documents, docs/decisions.md): the client
library batches the publishes of a process into few RPCs, so admitting a request costs no
Firestore write and is not bounded by Firestore's commit rate; ``publish_time`` is set by the
server when it receives the message, which is the arrival time fairness is judged by; and
with one ordering key per event the subscription hands out messages in that order and, while
a batch is unacknowledged, holds back the messages behind it (measured on the emulator), so a
batch lost with a crashed allocator is redelivered *before* anything that arrived after it.

Guarantees: a request whose ``publish`` returned is durable (at least once). The allocator
acknowledges a batch only after its answers were committed; a redelivered request whose answer
exists is skipped, so every request is answered exactly once (``store.requests``). The topic
and its subscription are made on first use by whoever comes first (buyer or allocator); the
subscription always exists before the first publish, so no request is published to a topic
nobody reads. No dead-letter policy: the emulator's ordered subscriptions crash with one, and
a request is never "poison" (any request gets an answer, a refusal at worst).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc

from boxoffice.domain.allocation import DEFAULT_POOL, RequestKind, TicketRequest
from boxoffice.log import kv

log = logging.getLogger(__name__)

TOPIC_PREFIX = "sale-requests."
SUBSCRIPTION_SUFFIX = ".allocator"
# Pub/Sub's minimum: a batch lost with a crashed allocator comes back after at most this long.
ACK_DEADLINE_S = 10


def topic_id(event_id: str) -> str:
    return f"{TOPIC_PREFIX}{event_id}"


def subscription_id(event_id: str) -> str:
    return f"{TOPIC_PREFIX}{event_id}{SUBSCRIPTION_SUFFIX}"


def encode(request: TicketRequest) -> bytes:
    return json.dumps({
        "id": request.id,
        "kind": request.kind.value,
        "event_id": request.event_id,
        "user_id": request.user_id,
        "quantity": request.quantity,
        "idempotency_key": request.idempotency_key,
        "attempt": request.attempt,
        "pool": request.pool,
        "hold_ttl_s": request.hold_ttl_s,
        "instance": request.instance,
    } | ({"lines": [list(line) for line in request.lines]} if request.lines else {})
      | ({"seats": list(request.seats)} if request.seats else {}), separators=(",", ":")).encode()


def decode(data: bytes, *, message_id: str, publish_time: datetime | None) -> TicketRequest:
    doc = json.loads(data)
    return TicketRequest(
        id=doc["id"],
        kind=RequestKind(doc["kind"]),
        event_id=doc["event_id"],
        user_id=doc["user_id"],
        quantity=int(doc["quantity"]),
        idempotency_key=doc["idempotency_key"],
        arrived_at=publish_time,
        attempt=int(doc.get("attempt", 1)),
        pool=doc.get("pool") or DEFAULT_POOL,
        hold_ttl_s=doc.get("hold_ttl_s"),
        instance=doc.get("instance", ""),
        message_id=message_id,
        lines=tuple((str(t), int(n)) for t, n in doc.get("lines", ())),
        seats=tuple(str(x) for x in doc.get("seats", ())),
    )


@dataclass(frozen=True)
class Delivery:
    request: TicketRequest | None  # None: a message that is not a request (acknowledged and ignored)
    ack_id: str


class AdmissionQueue:
    """Publishes requests and pulls them for the allocator; one per process and project.

    Publishing is batched by the client library: every request a process publishes within a
    few milliseconds travels in one RPC (``max_latency_s``).
    """

    def __init__(self, project: str, *, max_latency_s: float = 0.005) -> None:
        from google.cloud import pubsub_v1

        self.project = project
        self.publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000, max_latency=max_latency_s),
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
        )
        self.subscriber = pubsub_v1.SubscriberClient()
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def ensure_queue(self, event_id: str) -> None:
        """Create the event's topic and subscription if missing (idempotent, once per process)."""
        if event_id in self._ready:
            return
        topic = self.publisher.topic_path(self.project, topic_id(event_id))
        sub = self.subscriber.subscription_path(self.project, subscription_id(event_id))
        try:
            self.publisher.create_topic(name=topic)
        except gexc.AlreadyExists:
            pass
        try:
            self.subscriber.create_subscription(request={
                "name": sub, "topic": topic, "enable_message_ordering": True,
                "ack_deadline_seconds": ACK_DEADLINE_S,
            })
        except gexc.AlreadyExists:
            pass
        with self._lock:
            self._ready.add(event_id)

    def publish(self, request: TicketRequest) -> str:
        """Queue a request; returns its message id once Pub/Sub has stored it."""
        self.ensure_queue(request.event_id)
        topic = self.publisher.topic_path(self.project, topic_id(request.event_id))
        for attempt in (1, 2):
            future = self.publisher.publish(topic, encode(request), ordering_key=request.event_id)
            try:
                return str(future.result(timeout=30))
            except Exception as exc:
                self.publisher.resume_publish(topic, request.event_id)
                kv(log, logging.WARNING, "admission.publish_failed", event_id=request.event_id,
                   request_id=request.id, attempt=attempt, error=f"{type(exc).__name__}: {exc}")
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def pull(self, event_id: str, max_messages: int = 1000, timeout_s: float = 1.0) -> list[Delivery]:
        """Up to ``max_messages`` requests in arrival order (empty when none came within ``timeout_s``)."""
        self.ensure_queue(event_id)
        sub = self.subscriber.subscription_path(self.project, subscription_id(event_id))
        try:
            response = self.subscriber.pull(request={"subscription": sub, "max_messages": max_messages},
                                            timeout=timeout_s)
        except (gexc.DeadlineExceeded, gexc.ServiceUnavailable):
            return []
        out: list[Delivery] = []
        for received in response.received_messages:
            message = received.message
            try:
                request = decode(message.data, message_id=message.message_id,
                                 publish_time=_publish_time(message))
            except (ValueError, KeyError, TypeError) as exc:
                kv(log, logging.ERROR, "admission.bad_message", event_id=event_id, message_id=message.message_id,
                   error=f"{type(exc).__name__}: {exc}")
                request = None
            out.append(Delivery(request, received.ack_id))
        return out

    def ack(self, event_id: str, ack_ids: list[str]) -> None:
        if not ack_ids:
            return
        sub = self.subscriber.subscription_path(self.project, subscription_id(event_id))
        for start in range(0, len(ack_ids), 1000):
            self.subscriber.acknowledge(request={"subscription": sub, "ack_ids": ack_ids[start:start + 1000]})

    def close(self) -> None:
        try:
            self.publisher.stop()
        except Exception:  # noqa: BLE001 - closing must not fail the caller
            pass


def _publish_time(message: Any) -> datetime | None:
    # proto-plus gives a DatetimeWithNanoseconds (timezone-aware)
    value = getattr(message, "publish_time", None)
    return value if isinstance(value, datetime) else None


_QUEUES: dict[str, AdmissionQueue] = {}
_QUEUES_LOCK = threading.Lock()


def admission_queue(project: str) -> AdmissionQueue:
    """This process's queue client for ``project`` (made on first use)."""
    with _QUEUES_LOCK:
        queue = _QUEUES.get(project)
        if queue is None:
            queue = _QUEUES[project] = AdmissionQueue(project)
        return queue
