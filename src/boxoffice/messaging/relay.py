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
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.log import kv
from boxoffice.messaging import wire
from boxoffice.messaging.relay_leases import LeaseSettings, PartitionLeases, partition_of
from boxoffice.messaging.topology import Topology
from boxoffice.stats import percentile
from boxoffice.store.documents import OUTBOX, outbox_ref
from boxoffice.store.encoded_batch import EncodedWriteBatch

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 30.0
MARK_CHUNK = 500  # writes per marking commit
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    linger_s: float = 0.05  # after a wake-up, wait this long for more messages (fewer, larger commits)
    max_latency_s: float = 0.01  # the client's batch window per ordering key
    sweep_s: float = 5.0  # the backstop query
    sweep_limit: int = 2000
    # By default a query for unpublished outbox documents every ``poll_s``, with the sweep as the
    # backstop. BOXOFFICE_RELAY_LISTEN=1 drives it by a listener instead. Measured side by side on
    # the emulator (`simulate --pipeline`, 5,000 buyers, quiet machine, docs/figures.md): with the
    # listener commit -> publish p50 5.6 s / p99 29.9 s and the allocator's commits about 1.3 s;
    # polling 1.1 s / 2.7 s: the emulator evaluates every open listener inside every commit.
    # Production Firestore serves listeners off the write path: measure there before switching.
    listen: bool = False
    poll_s: float = 0.2
    leases: LeaseSettings = field(default_factory=LeaseSettings)

    @classmethod
    def from_env(cls) -> RelaySettings:
        return cls(listen=os.environ.get("BOXOFFICE_RELAY_LISTEN", "0") == "1")


def unpublished_query(db: firestore.Client, limit: int | None = None) -> Any:
    # Production needs a composite index (published_at ASC, created_at ASC) on outbox.
    q = db.collection(OUTBOX).where(filter=FieldFilter("published_at", "==", None)).order_by("created_at")
    return q.limit(limit) if limit else q


def _order(item: tuple[str, dict[str, Any]]) -> tuple[datetime, str]:
    created = item[1].get("created_at")
    return (created if isinstance(created, datetime) else _EPOCH, item[0])


@dataclass(frozen=True)
class Published:
    ok: list[str]  # ids Pub/Sub acknowledged (marked too, by ``publish_and_mark``)
    failed: int
    error: BaseException | None  # the first publish error
    publish_s: float = 0.0  # handing the messages over until every future resolved
    acked_at: dict[str, datetime] = field(default_factory=dict)  # of the ids in ``ok``


class Timings:
    """The durations of the relay's recent steps (the last ``keep`` of each), for its status."""

    def __init__(self, keep: int = 500) -> None:
        self._recent: dict[str, deque[float]] = {}
        self._keep = keep
        self._lock = threading.Lock()

    def add(self, step: str, seconds: float) -> None:
        with self._lock:
            self._recent.setdefault(step, deque(maxlen=self._keep)).append(seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        with self._lock:
            recent = {step: list(values) for step, values in self._recent.items() if values}
        return {step: {"p50_ms": round((percentile(v, 50) or 0.0) * 1000, 1),
                       "p99_ms": round((percentile(v, 99) or 0.0) * 1000, 1),
                       "max_ms": round(max(v) * 1000, 1), "n": len(v)} for step, v in recent.items()}


def publish(publisher: Any, topology: Topology, items: Iterable[tuple[str, dict[str, Any]]]) -> Published:
    """Publish outbox documents ``(id, doc)`` in commit order and wait for every future. Returns
    the ids Pub/Sub acknowledged (``acked_at``: this relay's clock when each was acknowledged);
    nothing is marked (``mark``)."""
    started = time.monotonic()
    sent: list[tuple[str, Any, str, str]] = []
    acked_at: dict[str, datetime] = {}  # when Pub/Sub acknowledged each (the future's completion)

    def note_ack(message_id: str) -> Any:
        return lambda _future: acked_at.setdefault(message_id, datetime.now(UTC))

    for message_id, doc in sorted(items, key=_order):
        data, attrs = wire.encode(message_id, doc)
        topic = topology.topic_path(doc.get("topic") or "ticket-events")
        key = str(doc.get("ordering_key") or "")
        try:
            future = publisher.publish(topic, data, ordering_key=key, **attrs)
        except Exception as exc:  # noqa: BLE001 - e.g. the key is paused: stays unpublished
            kv(log, logging.WARNING, "outbox.publish_refused", message_id=message_id, error=repr(exc))
            future = None
        if future is not None:
            future.add_done_callback(note_ack(message_id))
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
    now = datetime.now(UTC)
    return Published(ok, len(sent) - len(ok), first_error, time.monotonic() - started,
                     acked_at={mid: acked_at.get(mid, now) for mid in ok})


def mark(db: firestore.Client, acked_at: dict[str, datetime], *, published_by: str = "") -> None:
    """Mark acknowledged messages published, in commits of up to ``MARK_CHUNK`` writes."""
    ids = list(acked_at)
    for i in range(0, len(ids), MARK_CHUNK):
        batch = EncodedWriteBatch(db)  # hundreds of writes: encoded straight to protobuf
        for message_id in ids[i:i + MARK_CHUNK]:
            batch.update(outbox_ref(db, message_id), {"published_at": firestore.SERVER_TIMESTAMP,
                                                      "acked_at": acked_at[message_id],
                                                      "published_by": published_by,
                                                      "publish_attempts": firestore.Increment(1)})
        batch.commit()


def publish_and_mark(db: firestore.Client, publisher: Any, topology: Topology,
                     items: Iterable[tuple[str, dict[str, Any]]], *, published_by: str = "") -> Published:
    """``publish``, then ``mark`` the acknowledged ones (``published_by``: which relay, for
    audits; ``acked_at``: this relay's clock when Pub/Sub acknowledged the message, the moment it
    was published; ``published_at``: the marking commit's time)."""
    result = publish(publisher, topology, items)
    mark(db, result.acked_at, published_by=published_by)
    return result


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
        self._published_at: dict[str, float] = {}  # recently published ids (monotonic time)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._round = threading.Lock()  # held while a round publishes (a lease is released outside one)
        # Published, acknowledged, not yet marked: id -> doc. The marking commits run on a thread
        # of their own, so the next round publishes while the last one's marks commit.
        self._marking: dict[str, dict[str, Any]] = {}
        self._marks: queue.Queue[dict[str, datetime] | None] = queue.Queue()
        self._marks_done = threading.Condition(self._lock)
        self._marker_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._upkeep_thread: threading.Thread | None = None
        self._watch: Any = None
        self.timings = Timings()  # sweep (the query for unpublished messages), publish, mark

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
        started = time.monotonic()
        with self._lock:
            known = set(self._pending)
        found = {s.id: s.to_dict() or {} for s in unpublished_query(self.db, self.settings.sweep_limit).stream()}
        self.timings.add("sweep", time.monotonic() - started)
        with self._lock:
            if len(found) < self.settings.sweep_limit:
                # A complete answer: what this relay knew as pending before the query and the
                # query no longer lists was published since, most likely by the relay holding its
                # partition. Forget it, or taking that partition over later would publish it again.
                for mid in known - found.keys():
                    self._pending.pop(mid, None)
            # A message published while the query ran may still be in its result, and one being
            # marked is in it: skip those.
            self._pending.update({mid: doc for mid, doc in found.items()
                                  if self._published_at.get(mid, 0.0) < started and mid not in self._marking})
            horizon = time.monotonic() - 4 * self.settings.sweep_s
            self._published_at = {mid: t for mid, t in self._published_at.items() if t > horizon}

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    # --- one round ----------------------------------------------------------------------------

    def run_once(self) -> SweepResult:
        """Publish the pending messages of the partitions held (oldest first, up to a batch)."""
        with self._round:
            usable = self.leases.usable()
            partitions = self.settings.leases.partitions
            with self._lock:
                mine = [(mid, doc) for mid, doc in self._pending.items()
                        if partition_of(str(doc.get("ordering_key") or doc.get("event_id") or ""), partitions) in usable]
            mine.sort(key=_order)
            chosen = mine[:self.settings.batch]
            if not chosen:
                return SweepResult(0, 0, False)
            result = publish(self.publisher, self.topology, chosen)
            self.timings.add("publish", result.publish_s)
            with self._lock:
                for mid in result.ok:
                    self._marking[mid] = self._pending.pop(mid, {})
            if result.ok:
                self._marks.put(result.acked_at)
        self.rounds += 1
        self.published += len(result.ok)
        self.failed += result.failed
        return SweepResult(len(result.ok), result.failed, len(mine) > len(chosen), result.error)

    def _mark_loop(self) -> None:
        """Commit the marks of each round, in round order. A failed commit puts its messages back
        among the pending: they are published again (a duplicate the subscribers drop), never lost."""
        while True:
            acked = self._marks.get()
            if acked is None:
                return
            started = time.monotonic()
            try:
                mark(self.db, acked, published_by=self.leases.relay_id)
                ok = True
            except Exception as exc:  # noqa: BLE001 - published but not marked: publish again
                ok = False
                self.errors += 1
                kv(log, logging.WARNING, "outbox.mark_failed", messages=len(acked), error=repr(exc)[:300])
            self.timings.add("mark", time.monotonic() - started)
            now = time.monotonic()
            with self._lock:
                for mid in acked:
                    doc = self._marking.pop(mid, {})
                    if ok:
                        self._published_at[mid] = now
                    elif doc:
                        self._pending[mid] = doc
                self._marks_done.notify_all()
            if not ok:
                self._wake.set()

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """No round publishing and every mark committed: a partition released now has nothing
        in flight (its new holder would publish an unmarked message again)."""
        with self._round, self._lock:
            self._marks_done.wait_for(lambda: not self._marking or self._stop.is_set(), timeout=PUBLISH_TIMEOUT_S)
            yield

    def _upkeep(self) -> None:
        """Leases and the backstop sweep, on a thread of their own: under load a lease round trip
        or the sweep's query can take seconds, and publishing must not wait for them."""
        s = self.settings
        next_renew = next_sweep = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_renew:
                renewed = self._guarded("renew", lambda: self.leases.renew(self._quiet))
                next_renew = time.monotonic() + (s.leases.renew_s if renewed else 1.0)
                self._wake.set()  # partitions may have been gained
            if now >= next_sweep:
                steps = (self._listen, self._sweep_into_pending) if s.listen else (self._sweep_into_pending,)
                started = time.monotonic()
                self._guarded("sweep", *steps)
                # Polls start every poll_s (not poll_s after the last one ended): under load the
                # query takes 0.1-0.9 s, which would otherwise stretch the publish lag by as much.
                next_sweep = (time.monotonic() + s.sweep_s) if s.listen else max(started + s.poll_s,
                                                                                 time.monotonic() + 0.05)
                self._wake.set()
            self._stop.wait(max(0.05, min(next_renew, next_sweep) - time.monotonic()))

    def _run(self) -> None:
        s = self.settings
        failures = 0
        while not self._stop.is_set():
            pause = 0.0
            try:
                self._wake.clear()
                result = self.run_once()
                failures = failures + 1 if result.failed else 0
                if result.error is not None and self._heal(result.error):
                    continue
                if result.failed:
                    pause = min(5.0, 0.2 * 2 ** failures)
                elif not result.full:
                    pause = 1.0  # woken earlier by the listener, the upkeep thread or stop()
            except Exception as exc:  # noqa: BLE001 - a loop must survive a Firestore hiccup
                self.errors += 1
                failures += 1
                pause = min(5.0, 0.2 * 2 ** failures)
                kv(log, logging.WARNING, "outbox.round_failed", error=repr(exc)[:300])
            if pause:
                if failures:
                    self._stop.wait(pause)
                elif self._wake.wait(pause) and s.linger_s and self.pending() < s.batch:
                    self._stop.wait(s.linger_s)

    def _guarded(self, what: str, *steps: Any) -> bool:
        try:
            for step in steps:
                step()
            return True
        except Exception as exc:  # noqa: BLE001 - retried on the next turn of the loop
            self.errors += 1
            kv(log, logging.WARNING, f"outbox.{what}_failed", error=repr(exc)[:300])
            return False

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

    def start(self) -> OutboxRelay:
        self._stop.clear()
        self._upkeep_thread = threading.Thread(target=self._upkeep, name=f"{self.name}-upkeep", daemon=True)
        self._upkeep_thread.start()
        self._marker_thread = threading.Thread(target=self._mark_loop, name=f"{self.name}-mark", daemon=True)
        self._marker_thread.start()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def status(self) -> dict[str, Any]:
        alive = all(t is not None and t.is_alive() for t in (self._thread, self._upkeep_thread, self._marker_thread))
        return {"alive": alive, "published": self.published,
                "failed": self.failed, "rounds": self.rounds, "errors": self.errors, "pending": self.pending(),
                "topology_recreated": self.topology_recreated,
                "partitions": self.leases.held(), "relay_id": self.leases.relay_id,
                "timings": self.timings.summary()}

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._upkeep_thread):
            if thread is not None:
                thread.join(timeout)
        self._marks.put(None)  # after the last round: its marks are committed, then the marker ends
        if self._marker_thread is not None:
            self._marker_thread.join(timeout)
        self._thread = self._upkeep_thread = self._marker_thread = None
        if self._watch is not None:
            self._watch.unsubscribe()
            self._watch = None
        try:
            self.leases.release_all()
        except Exception as exc:  # noqa: BLE001 - the leases lapse by themselves
            kv(log, logging.WARNING, "outbox.lease_release_failed", error=repr(exc))
