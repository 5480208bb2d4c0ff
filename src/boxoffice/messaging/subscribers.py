"""Subscribers: turn Pub/Sub deliveries into handler calls, ack or nack, and dead-letter.

``process`` is transport-free: it decodes, calls the handler, and says ack or nack. A handler
is idempotent by the message id (it writes its processed-message record in the same commit as
its effect), so at-least-once delivery gives exactly-once effects.

- success, duplicate, or a type this subscriber does not handle -> ack (unknown types are
  counted, never dead-lettered: the emulator ignores subscription filters, and a newer
  publisher may send types an older subscriber does not know);
- ``RetryLater`` (the message is fine but must wait: another delivery is sending it, or a
  message it must follow is not handled yet) -> nack, counted as "deferred", NOT as a failure:
  it never brings the message closer to the dead-letter topic (the handler bounds the wait);
- a dependency that does not answer (Firestore unavailable or timing out, the SMTP server
  refusing connections: ``is_unavailable``) -> nack, counted as "unavailable", NOT as a
  failure of the message: an outage must not dead-letter good messages. The pulling
  subscriber then stops pulling until ``probe`` says its dependencies answer again;
- a handler error -> the failure is recorded (``message_failures/``: error, attempts) and the
  message is nacked, so Pub/Sub redelivers it after the retry policy's exponential backoff;
- the ``max_delivery_attempts``-th failure -> published to the dead-letter topic with its
  error, and acked. Failures are counted in the failure record (Pub/Sub's ``delivery_attempt``
  also counts deferrals and ack-deadline expiries; the native dead-letter policy, with its own
  limit, is only the backstop for a handler that cannot even record its failure).

Three transports: ``PullingSubscriber`` (unary-pull batches on a thread pool: what the worker
runs for the unordered email and analytics subscriptions), ``StreamingSubscriber`` (streaming
pull: for an ordered subscription, one event's messages one at a time, in order) and
``pull_batch`` (one unary pull: tests, and operators draining by hand). Note the emulator's
quirk: after a streaming-pull subscriber dies, its unacked messages come back only after about
70 s; a unary pull gets them back after the ack deadline.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from boxoffice.log import kv
from boxoffice.messaging import deadletter, wire
from boxoffice.messaging.topology import SubscriptionSpec, Topology, unary_pull
from boxoffice.store.messaging import message_failure_ref

log = logging.getLogger(__name__)

Handler = Callable[[wire.Delivered], str]
# A batch handler gets a pulled batch (distinct message ids, types of its subscription) and
# returns, per message id, the outcome or the exception that message's handling raised.
BatchHandler = Callable[[list[wire.Delivered]], dict[str, "str | BaseException"]]


# Errors that say a dependency is away, not that the message is bad.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError, ConnectionError, TimeoutError,
    socket.timeout, smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError,
)


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE)


class RetryLater(Exception):
    """Raised by a handler for a message that cannot be handled YET (not a failure): nacked,
    redelivered after the retry backoff, never dead-lettered for it. The handler must make
    sure the wait ends (a lease, a deadline)."""


class Verdict(StrEnum):
    ACK = "ack"
    NACK = "nack"


@dataclass
class SubscriberStats:
    outcomes: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    @property
    def handled(self) -> int:
        return sum(self.outcomes.values())


@dataclass
class Subscription:
    """Everything needed to process one subscription's messages."""

    db: firestore.Client
    topology: Topology
    spec: SubscriptionSpec
    handler: Handler
    publisher: Any  # for dead letters
    stats: SubscriberStats = field(default_factory=SubscriberStats)
    batch_handler: BatchHandler | None = None  # handles a pulled batch at once (PullingSubscriber)

    @property
    def path(self) -> str:
        return self.topology.subscription_path(self.spec.name)


def _record_failure(sub: Subscription, message_id: str, event_id: str, exc: BaseException) -> int:
    ref = message_failure_ref(sub.db, sub.spec.name, message_id)
    ref.set({"subscription": sub.spec.name, "message_id": message_id, "event_id": event_id,
             "last_error": repr(exc)[:1000],
             "failures": firestore.Increment(1), "last_failed_at": firestore.SERVER_TIMESTAMP},
            merge=True)
    # Failures as recorded, not Pub/Sub's delivery_attempt: that one also counts deferrals
    # (RetryLater) and redeliveries after an ack deadline, which are not failures.
    return int((ref.get().to_dict() or {}).get("failures", 1))


def _verdict(sub: Subscription, data: bytes, attributes: dict[str, str], result: str | BaseException) -> Verdict:
    """Ack or nack one message given its handler's outcome (or error); never raises."""
    message_id = attributes.get("message_id", "?")
    if not isinstance(result, BaseException):
        sub.stats.add(result)
        if result == "unknown_type":
            kv(log, logging.INFO, "message.unknown_type", subscription=sub.spec.name, message_id=message_id,
               type=attributes.get("type"))
        return Verdict.ACK
    exc = result
    if isinstance(exc, RetryLater):
        sub.stats.add("deferred")
        kv(log, logging.DEBUG, "message.deferred", subscription=sub.spec.name, message_id=message_id,
           reason=str(exc))
        return Verdict.NACK
    if is_unavailable(exc):
        sub.stats.add("unavailable")
        kv(log, logging.WARNING, "message.dependency_unavailable", subscription=sub.spec.name,
           message_id=message_id, error=repr(exc)[:300])
        return Verdict.NACK
    try:
        attempts = _record_failure(sub, message_id, attributes.get("event_id", ""), exc)
    except Exception:  # noqa: BLE001 - Firestore down too: let Pub/Sub count (native policy)
        kv(log, logging.ERROR, "message.failure_unrecorded", subscription=sub.spec.name, message_id=message_id)
        sub.stats.add("failed")
        return Verdict.NACK
    if attempts >= sub.spec.max_delivery_attempts:
        try:
            deadletter.publish_dead_letter(sub.publisher, sub.topology, data, attributes, sub.spec.name,
                                           repr(exc), attempts)
            message_failure_ref(sub.db, sub.spec.name, message_id).update({"dead_lettered": True})
        except Exception:  # noqa: BLE001 - try again on the next delivery
            sub.stats.add("failed")
            return Verdict.NACK
        sub.stats.add("dead_lettered")
        kv(log, logging.ERROR, "message.dead_lettered", subscription=sub.spec.name, message_id=message_id,
           attempts=attempts, error=repr(exc))
        return Verdict.ACK
    sub.stats.add("failed")
    kv(log, logging.WARNING, "message.failed", subscription=sub.spec.name, message_id=message_id,
       attempts=attempts, error=repr(exc))
    return Verdict.NACK


def process(sub: Subscription, data: bytes, attributes: dict[str, str], delivery_attempt: int = 0) -> Verdict:
    """Handle one delivery; never raises."""
    result: str | BaseException
    try:
        d = wire.decode(data, attributes, delivery_attempt)
        result = sub.handler(d) if d.type in sub.spec.types else "unknown_type"
    except Exception as exc:  # noqa: BLE001 - every failure becomes a nack or a dead letter
        result = exc
    return _verdict(sub, data, attributes, result)


Received = tuple[bytes, dict[str, str], int]  # data, attributes, delivery attempt


def process_batch(sub: Subscription, received: list[Received]) -> list[Verdict]:
    """Handle a pulled batch with the subscription's batch handler (one call for the batch: it
    folds database round trips); per message the same verdicts as ``process``. A message id
    that appears twice in the batch (a redelivery) is handed over once; the copy is a duplicate.
    Never raises."""
    if sub.batch_handler is None:
        return [process(sub, data, attrs, attempt) for data, attrs, attempt in received]
    results: list[str | BaseException | None] = [None] * len(received)
    handled: dict[str, wire.Delivered] = {}
    first: dict[str, int] = {}
    for i, (data, attrs, attempt) in enumerate(received):
        try:
            d = wire.decode(data, attrs, attempt)
        except Exception as exc:  # noqa: BLE001 - a poison message: failure path
            results[i] = exc
            continue
        if d.type not in sub.spec.types:
            results[i] = "unknown_type"
        elif d.message_id in first:
            results[i] = "duplicate"
        else:
            first[d.message_id] = i
            handled[d.message_id] = d
    if handled:
        try:
            outcomes = sub.batch_handler(list(handled.values()))
        except Exception as exc:  # noqa: BLE001 - the whole batch failed: each message is retried
            outcomes = {mid: exc for mid in handled}
        for mid, i in first.items():
            results[i] = outcomes.get(mid, RuntimeError(f"batch handler gave no outcome for {mid}"))
    return [_verdict(sub, data, attrs, result if result is not None else RuntimeError("unhandled"))
            for (data, attrs, _), result in zip(received, results, strict=False)]



def pull_batch(sub: Subscription, subscriber: Any, max_messages: int = 100, *,
               stop_after: int | None = None) -> list[Verdict]:
    """One unary pull, each message processed in turn and acked or nacked.

    ``stop_after`` simulates a crash: after that many messages the rest of the batch is
    abandoned without ack or nack (they come back after the ack deadline)."""
    resp = unary_pull(subscriber, sub.path, max_messages)
    verdicts: list[Verdict] = []
    for i, rm in enumerate(resp.received_messages):
        if stop_after is not None and i >= stop_after:
            break
        v = process(sub, bytes(rm.message.data), dict(rm.message.attributes), rm.delivery_attempt)
        if v is Verdict.ACK:
            subscriber.acknowledge(subscription=sub.path, ack_ids=[rm.ack_id])
        else:
            subscriber.modify_ack_deadline(subscription=sub.path, ack_ids=[rm.ack_id], ack_deadline_seconds=0)
        verdicts.append(v)
    return verdicts


class StreamingSubscriber:
    """A streaming-pull subscriber as a background loop: ``start()`` / ``stop()``.

    ``max_outstanding`` bounds messages in flight (flow control) and ``threads`` the handler
    threads. On an ordered subscription the client hands a key's next message to the callback
    only after the previous one was acked or nacked: per event, handling is sequential."""

    def __init__(self, sub: Subscription, *, subscriber: Any = None, max_outstanding: int = 200,
                 threads: int = 8) -> None:
        from boxoffice.messaging.topology import subscriber_client

        self.sub = sub
        self.name = f"subscriber-{sub.spec.name}"
        self.subscriber = subscriber or subscriber_client()
        self.max_outstanding = max_outstanding
        self.threads = threads
        self._future: Any = None

    @property
    def stats(self) -> SubscriberStats:
        return self.sub.stats

    def _callback(self, message: Any) -> None:
        v = process(self.sub, bytes(message.data), dict(message.attributes), message.delivery_attempt or 0)
        if v is Verdict.ACK:
            message.ack()
        else:
            message.nack()

    def start(self) -> StreamingSubscriber:
        from concurrent.futures import ThreadPoolExecutor

        import google.cloud.pubsub_v1 as pubsub_v1
        from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

        scheduler = ThreadScheduler(ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=self.name))
        self._future = self.subscriber.subscribe(
            self.sub.path, callback=self._callback, scheduler=scheduler,
            flow_control=pubsub_v1.types.FlowControl(max_messages=self.max_outstanding),
        )
        return self

    def status(self) -> dict[str, Any]:
        return {"alive": self._future is not None and not self._future.done(), **self.stats.outcomes}

    def stop(self, timeout: float = 10.0) -> None:
        if self._future is not None:
            self._future.cancel()  # stops pulling; in-flight callbacks finish first
            try:
                self._future.result(timeout=timeout)
            except Exception:  # noqa: BLE001 - cancelled futures raise on result()
                pass
            self._future = None


class PullingSubscriber:
    """A unary-pull subscriber as a background loop, for UNORDERED subscriptions.

    Why not streaming pull there: the Python client hands a callback the next message of an
    ordering key only after the previous one was acked, whatever the subscription's ordering
    setting, and every message here carries the event id as ordering key, so a streaming
    subscriber handles one event's messages one at a time.

    ``pullers`` loops pull at the same time (so the next batch is being handled while a slow one
    finishes), each up to ``batch`` messages (flow control: at most ``pullers x batch`` messages
    held unacked). With a batch handler a pulled batch is handled in one call (analytics: one
    commit per event; email: batched reads and writes, SMTP sends in parallel); without one,
    its messages are handled on ``threads`` threads. Acks and nacks go in one call per batch."""

    def __init__(self, sub: Subscription, *, subscriber: Any = None, batch: int = 100, threads: int = 8,
                 pullers: int = 1, idle_s: float = 0.1, probe: Callable[[], None] | None = None) -> None:
        from boxoffice.messaging.topology import subscriber_client

        self.sub = sub
        self.name = f"subscriber-{sub.spec.name}"
        self.subscriber = subscriber or subscriber_client()
        self.batch = batch
        self.threads = threads
        self.pullers = pullers
        self.idle_s = idle_s
        self.pulls = 0  # non-empty pulls, and the messages they brought (mean batch = pulled / pulls)
        self.pulled = 0
        # Raises while a dependency of the handler (Firestore, SMTP) is down: after a batch with
        # "unavailable" messages, pulling waits until it passes, so that an outage does not
        # spend the messages' delivery attempts (the native dead-letter policy counts them).
        self.probe = probe
        self.topology_recreated = 0
        self.outages = 0
        self._count_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool: Any = None

    @property
    def stats(self) -> SubscriberStats:
        return self.sub.stats

    def run_once(self, pool: Any = None) -> int:
        resp = unary_pull(self.subscriber, self.sub.path, self.batch)
        received = list(resp.received_messages)
        if not received:
            return 0
        with self._count_lock:
            self.pulls += 1
            self.pulled += len(received)
        items = [(bytes(rm.message.data), dict(rm.message.attributes), rm.delivery_attempt) for rm in received]
        if self.sub.batch_handler is not None or pool is None:
            verdicts = process_batch(self.sub, items)
        else:
            verdicts = list(pool.map(lambda item: process(self.sub, *item), items))
        acks = [rm.ack_id for rm, v in zip(received, verdicts, strict=False) if v is Verdict.ACK]
        nacks = [rm.ack_id for rm, v in zip(received, verdicts, strict=False) if v is Verdict.NACK]
        if acks:
            self.subscriber.acknowledge(subscription=self.sub.path, ack_ids=acks)
        if nacks:
            self.subscriber.modify_ack_deadline(subscription=self.sub.path, ack_ids=nacks, ack_deadline_seconds=0)
        return len(received)

    def _wait_for_dependencies(self) -> None:
        """Back off (0.5 s doubling to 10 s) until ``probe`` passes or the loop stops."""
        if self.probe is None:
            return
        self.outages += 1
        pause = 0.5
        while not self._stop.is_set():
            try:
                self.probe()
                kv(log, logging.INFO, "subscriber.dependencies_back", subscription=self.sub.spec.name)
                return
            except Exception as exc:  # noqa: BLE001 - still down: wait longer
                kv(log, logging.WARNING, "subscriber.dependency_down", subscription=self.sub.spec.name,
                   error=repr(exc)[:300])
            self._stop.wait(pause)
            pause = min(10.0, pause * 2)

    def _heal(self, exc: BaseException) -> bool:
        from boxoffice.messaging.topology import recreate_if_missing

        try:
            healed = recreate_if_missing(self.sub.topology, exc, self.sub.publisher, self.subscriber)
        except Exception as again:  # noqa: BLE001 - Pub/Sub still down: the backoff goes on
            kv(log, logging.WARNING, "subscriber.topology_recreate_failed", error=repr(again)[:300])
            return False
        self.topology_recreated += healed
        return healed

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                unavailable = self.stats.outcomes["unavailable"]
                if self.run_once(self._pool) == 0:
                    self._stop.wait(self.idle_s)
                elif self.stats.outcomes["unavailable"] > unavailable:
                    self._wait_for_dependencies()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the loop survives an emulator hiccup
                failures += 1
                kv(log, logging.WARNING, "subscriber.pull_failed", subscription=self.sub.spec.name,
                   error=repr(exc)[:300])
                if self._heal(exc):
                    continue
                self._stop.wait(min(10.0, 0.25 * 2 ** failures))

    def start(self) -> PullingSubscriber:
        from concurrent.futures import ThreadPoolExecutor

        self._stop.clear()
        if self.sub.batch_handler is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=self.name)
        self._threads = [threading.Thread(target=self._run, name=f"{self.name}-pull{i}", daemon=True)
                         for i in range(max(1, self.pullers))]
        for thread in self._threads:
            thread.start()
        return self

    def status(self) -> dict[str, Any]:
        alive = bool(self._threads) and all(t.is_alive() for t in self._threads)
        return {"alive": alive, "pulls": self.pulls, "pulled": self.pulled, "pullers": len(self._threads),
                "topology_recreated": self.topology_recreated, "outages": self.outages, **self.stats.outcomes}

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
