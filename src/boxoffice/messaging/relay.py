"""The outbox relay: publishes what purchases (and every other change) wrote to outbox/.

Guarantees:
- **at least once**: a message is marked published only after Pub/Sub acknowledged it, so a
  crash between publish and mark publishes it again (subscribers dedupe by the stable
  ``message_id`` attribute); nothing is ever lost;
- **in order per event**: messages carry the event id as ordering key, on a publisher with
  message ordering enabled, and a relay always publishes an event's unpublished messages as a
  prefix in commit order (``created_at``, then id). So the first copy of message n+1 reaches
  Pub/Sub after the first copy of message n: whoever published n+1 either published n before it
  on the same ordered publisher, or found n already marked (published). When one message of a
  key fails, the client fails the rest of that key; none of them is marked, the key is resumed
  and they go again, still in order. Several relays at once only add duplicates;
- **within a second**: ``OutboxRelay`` is woken by a Firestore listener on unpublished outbox
  documents and publishes what it holds in memory (no query per round); a sweep every
  ``sweep_s`` is the backstop for anything the listener missed (and restarts a dead listener);
- **in batches**: one round hands up to ``batch`` messages to the client (which batches them
  per ordering key, ``max_latency_s``), gathers the futures, then marks the acknowledged ones in
  commits of up to ``MARK_CHUNK`` writes.

Several relays (two workers) share the outbox by partition leases (``relay_leases.py``): each
publishes only the partitions it holds, so the work is split instead of done twice.

In production: a Cloud Function per outbox document plus a scheduled sweep for stragglers
(``cloud_functions.py``), or this relay as a long-running service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.log import kv
from boxoffice.messaging import wire
from boxoffice.messaging.relay_leases import LeaseSettings, PartitionLeases, partition_of
from boxoffice.messaging.topology import Topology
from boxoffice.store.documents import OUTBOX, outbox_ref

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 30.0
MARK_CHUNK = 500  # writes per marking commit
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class SweepResult:
    published: int
    failed: int
    full: bool  # the sweep hit its limit: more may be waiting
    error: BaseException | None = None  # the first publish error, if any (e.g. NotFound: topic gone)


def resume_keys(publisher: Any, keys: set[tuple[str, str]]) -> None:
    """Resume the ordering keys whose publish failed (the client pauses a key on a failure so
    that later messages of the key cannot overtake it). Once per key: resuming a key that is not
    paused raises "Ordering key is not paused", which must not end the round."""
    for topic, key in keys:
        try:
            publisher.resume_publish(topic, key)
        except RuntimeError:
            pass


@dataclass(frozen=True)
class RelaySettings:
    """The relay's knobs (defaults measured: docs/parts/messaging.md)."""

    batch: int = 500  # messages handed to the publisher per round
    max_latency_s: float = 0.01  # the client's batch window per ordering key
    sweep_s: float = 5.0  # the backstop query
    sweep_limit: int = 2000
    leases: LeaseSettings = field(default_factory=LeaseSettings)


def unpublished_query(db: firestore.Client, limit: int | None = None) -> Any:
    # Production needs a composite index (published_at ASC, created_at ASC) on outbox.
    q = db.collection(OUTBOX).where(filter=FieldFilter("published_at", "==", None)).order_by("created_at")
    return q.limit(limit) if limit else q


def _order(item: tuple[str, dict[str, Any]]) -> tuple[datetime, str]:
    created = item[1].get("created_at")
    return (created if isinstance(created, datetime) else _EPOCH, item[0])


@dataclass(frozen=True)
class Published:
    ok: list[str]  # ids published and marked
    failed: int
    error: BaseException | None  # the first publish error


def publish_and_mark(db: firestore.Client, publisher: Any, topology: Topology,
                     items: Iterable[tuple[str, dict[str, Any]]], *, published_by: str = "") -> Published:
    """Publish outbox documents ``(id, doc)`` in commit order, wait for every future, then mark
    the acknowledged ones published in batched commits (``published_by``: which relay, for
    audits)."""
    sent: list[tuple[str, Any, str, str]] = []
    for message_id, doc in sorted(items, key=_order):
        data, attrs = wire.encode(message_id, doc)
        topic = topology.topic_path(doc.get("topic") or "ticket-events")
        key = str(doc.get("ordering_key") or "")
        try:
            future = publisher.publish(topic, data, ordering_key=key, **attrs)
        except Exception as exc:  # noqa: BLE001 - e.g. the key is paused: stays unpublished
            kv(log, logging.WARNING, "outbox.publish_refused", message_id=message_id, error=repr(exc))
            future = None
        sent.append((message_id, future, topic, key))
    ok: list[str] = []
    paused: set[tuple[str, str]] = set()
    first_error: BaseException | None = None
    for message_id, future, topic, key in sent:
        try:
            if future is None:
                raise RuntimeError("not accepted by the publisher")
            future.result(timeout=PUBLISH_TIMEOUT_S)
            ok.append(message_id)
        except Exception as exc:  # noqa: BLE001 - stays unpublished, the next round retries it
            first_error = first_error or exc
            if key:
                paused.add((topic, key))
            kv(log, logging.WARNING if first_error is exc else logging.DEBUG, "outbox.publish_failed",
               message_id=message_id, error=repr(exc)[:300])
    resume_keys(publisher, paused)  # after every future resolved: the key's later messages failed too
    for i in range(0, len(ok), MARK_CHUNK):
        batch = db.batch()
        for message_id in ok[i:i + MARK_CHUNK]:
            batch.update(outbox_ref(db, message_id), {"published_at": firestore.SERVER_TIMESTAMP,
                                                      "published_by": published_by,
                                                      "publish_attempts": firestore.Increment(1)})
        batch.commit()
    return Published(ok, len(sent) - len(ok), first_error)


def publish_one(db: firestore.Client, publisher: Any, topology: Topology, message_id: str,
                doc: dict[str, Any]) -> None:
    """Publish one outbox document and mark it published (the Cloud Function path)."""
    result = publish_and_mark(db, publisher, topology, [(message_id, doc)])
    if result.error is not None:
        raise result.error


def sweep(db: firestore.Client, publisher: Any, topology: Topology, *, limit: int = 500) -> SweepResult:
    """Publish up to ``limit`` unpublished outbox messages, oldest first, then mark them."""
    snaps = list(unpublished_query(db, limit).stream())
    if not snaps:
        return SweepResult(0, 0, False)
    result = publish_and_mark(db, publisher, topology, [(s.id, s.to_dict() or {}) for s in snaps])
    kv(log, logging.DEBUG, "outbox.swept", published=len(result.ok), failed=result.failed)
    return SweepResult(len(result.ok), result.failed, len(snaps) == limit, result.error)


class OutboxRelay:
    """The relay as a background loop (``start()`` / ``stop()``; safe to stop at any moment).

    A listener keeps the unpublished outbox documents in memory and wakes the loop; each round
    publishes the pending messages of the partitions this relay holds, oldest first, up to
    ``settings.batch``; a failing Pub/Sub is retried with backoff."""

    name = "outbox-relay"

    def __init__(self, db: firestore.Client, topology: Topology, *, publisher: Any = None,
                 settings: RelaySettings | None = None, relay_id: str | None = None) -> None:
        from boxoffice.messaging.topology import publisher_client

        self.db = db
        self.topology = topology
        self.settings = settings or RelaySettings()
        self.publisher = publisher or publisher_client(batch_max_messages=self.settings.batch,
                                                       max_latency_s=self.settings.max_latency_s)
        self.leases = PartitionLeases(db, topology.topic_id(), self.settings.leases, relay_id)
        self.published = 0
        self.failed = 0
        self.rounds = 0
        self.errors = 0
        self.topology_recreated = 0
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None

    # --- what is unpublished ----------------------------------------------------------------

    def _on_snapshot(self, docs: Any, changes: Any, read_time: Any) -> None:
        with self._lock:
            for change in changes:
                doc = change.document
                if change.type.name == "REMOVED":
                    self._pending.pop(doc.id, None)
                else:
                    data = doc.to_dict() or {}
                    if data.get("published_at") is None:
                        self._pending[doc.id] = data
        self._wake.set()

    def _listen(self) -> None:
        watch = self._watch
        if watch is not None and not getattr(watch, "_closed", False):
            return
        if watch is not None:
            kv(log, logging.WARNING, "outbox.listener_restarted", relay=self.leases.relay_id)
        self._watch = unpublished_query(self.db).on_snapshot(self._on_snapshot)

    def _sweep_into_pending(self) -> None:
        found = {s.id: s.to_dict() or {} for s in unpublished_query(self.db, self.settings.sweep_limit).stream()}
        with self._lock:
            self._pending.update(found)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    # --- one round ----------------------------------------------------------------------------

    def run_once(self) -> SweepResult:
        """Publish the pending messages of the partitions held (oldest first, up to a batch)."""
        usable = self.leases.usable()
        partitions = self.settings.leases.partitions
        with self._lock:
            mine = [(mid, doc) for mid, doc in self._pending.items()
                    if partition_of(str(doc.get("ordering_key") or doc.get("event_id") or ""), partitions) in usable]
        mine.sort(key=_order)
        chosen = mine[:self.settings.batch]
        if not chosen:
            return SweepResult(0, 0, False)
        result = publish_and_mark(self.db, self.publisher, self.topology, chosen, published_by=self.leases.relay_id)
        with self._lock:
            for mid in result.ok:
                self._pending.pop(mid, None)
        self.rounds += 1
        self.published += len(result.ok)
        self.failed += result.failed
        return SweepResult(len(result.ok), result.failed, len(mine) > len(chosen), result.error)

    def _run(self) -> None:
        s = self.settings
        failures = 0
        next_renew = next_sweep = 0.0
        while not self._stop.is_set():
            pause = 0.0
            try:
                now = time.monotonic()
                if now >= next_renew:
                    self.leases.renew()
                    next_renew = now + s.leases.renew_s
                if now >= next_sweep:
                    self._listen()
                    self._sweep_into_pending()
                    next_sweep = now + s.sweep_s
                self._wake.clear()
                result = self.run_once()
                failures = failures + 1 if result.failed else 0
                if result.error is not None and self._heal(result.error):
                    continue
                if result.failed:
                    pause = min(5.0, 0.2 * 2 ** failures)
                elif not result.full:
                    pause = max(0.0, min(next_renew, next_sweep) - time.monotonic())
            except Exception as exc:  # noqa: BLE001 - a loop must survive a Firestore hiccup
                self.errors += 1
                failures += 1
                pause = min(5.0, 0.2 * 2 ** failures)
                kv(log, logging.WARNING, "outbox.round_failed", error=repr(exc))
            if pause:
                if failures:
                    self._stop.wait(pause)
                else:
                    self._wake.wait(pause)

    def _heal(self, exc: BaseException) -> bool:
        """The topic is gone (a restarted emulator): create the topology again, then retry."""
        from boxoffice.messaging.topology import recreate_if_missing

        try:
            healed = recreate_if_missing(self.topology, exc, self.publisher)
        except Exception as again:  # noqa: BLE001 - Pub/Sub still down: the backoff goes on
            kv(log, logging.WARNING, "outbox.topology_recreate_failed", error=repr(again)[:300])
            return False
        self.topology_recreated += healed
        return healed

    def start(self) -> "OutboxRelay":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def status(self) -> dict[str, Any]:
        return {"alive": bool(self._thread and self._thread.is_alive()), "published": self.published,
                "failed": self.failed, "rounds": self.rounds, "errors": self.errors, "pending": self.pending(),
                "topology_recreated": self.topology_recreated,
                "partitions": self.leases.held(), "relay_id": self.leases.relay_id}

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._watch is not None:
            self._watch.unsubscribe()
            self._watch = None
        try:
            self.leases.release_all()
        except Exception as exc:  # noqa: BLE001 - the leases lapse by themselves
            kv(log, logging.WARNING, "outbox.lease_release_failed", error=repr(exc))
