"""The outbox relay: publishes what purchases (and every other change) wrote to outbox/.

Guarantee: at least once, in order per event. A message is marked published only after
Pub/Sub acknowledged it, so a crash between publish and mark publishes it again on the next
sweep (subscribers dedupe by the stable ``message_id`` attribute); nothing is ever lost.
Messages are published oldest first, with the event id as ordering key, on a publisher with
message ordering enabled: when one message of an event fails, the client fails the rest of
that key in the batch, they stay unpublished and go again, still in order, next sweep.

Run one relay per database (``boxoffice messaging run`` / the worker locally; in production
a Cloud Function per outbox document plus a scheduled sweep for stragglers, see
``cloud_functions.py``). Two relays racing only publish some messages twice.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.log import kv
from boxoffice.messaging import wire
from boxoffice.messaging.topology import Topology
from boxoffice.store.documents import OUTBOX, outbox_ref

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SweepResult:
    published: int
    failed: int
    full: bool  # the sweep hit its limit: more may be waiting
    error: BaseException | None = None  # the first publish error, if any (e.g. NotFound: topic gone)


def resume_keys(publisher: Any, keys: set[tuple[str, str]]) -> None:
    """Resume the ordering keys whose publish failed (the client pauses a key on a failure so
    that later messages of the key cannot overtake it). Once per key: resuming a key that is not
    paused raises "Ordering key is not paused", which must not end the sweep."""
    for topic, key in keys:
        try:
            publisher.resume_publish(topic, key)
        except RuntimeError:
            pass


def unpublished_query(db: firestore.Client, limit: int | None = None) -> Any:
    # Production needs a composite index (published_at ASC, created_at ASC) on outbox.
    q = db.collection(OUTBOX).where(filter=FieldFilter("published_at", "==", None)).order_by("created_at")
    return q.limit(limit) if limit else q


def publish_one(db: firestore.Client, publisher: Any, topology: Topology, message_id: str,
                doc: dict[str, Any]) -> None:
    """Publish one outbox document and mark it published (the Cloud Function path)."""
    data, attrs = wire.encode(message_id, doc)
    topic = topology.topic_path(doc.get("topic") or "ticket-events")
    key = str(doc.get("ordering_key") or "")
    try:
        publisher.publish(topic, data, ordering_key=key, **attrs).result(timeout=PUBLISH_TIMEOUT_S)
    except Exception:
        if key:
            resume_keys(publisher, {(topic, key)})
        raise
    outbox_ref(db, message_id).update(
        {"published_at": firestore.SERVER_TIMESTAMP, "publish_attempts": firestore.Increment(1)}
    )


def sweep(db: firestore.Client, publisher: Any, topology: Topology, *, limit: int = 500) -> SweepResult:
    """Publish up to ``limit`` unpublished outbox messages, oldest first, then mark them."""
    snaps = list(unpublished_query(db, limit).stream())
    if not snaps:
        return SweepResult(0, 0, False)
    sent: list[tuple[Any, Any, str, str]] = []
    for snap in snaps:
        doc = snap.to_dict() or {}
        data, attrs = wire.encode(snap.id, doc)
        topic = topology.topic_path(doc.get("topic") or "ticket-events")
        key = str(doc.get("ordering_key") or "")
        sent.append((snap, publisher.publish(topic, data, ordering_key=key, **attrs), topic, key))
    ok: list[Any] = []
    failed = 0
    first_error: BaseException | None = None
    paused: set[tuple[str, str]] = set()
    for snap, future, topic, key in sent:
        try:
            future.result(timeout=PUBLISH_TIMEOUT_S)
            ok.append(snap)
        except Exception as exc:  # noqa: BLE001 - stays unpublished, next sweep retries it
            failed += 1
            first_error = first_error or exc
            if key:
                paused.add((topic, key))
            kv(log, logging.WARNING if failed == 1 else logging.DEBUG, "outbox.publish_failed",
               message_id=snap.id, error=repr(exc)[:300])
    resume_keys(publisher, paused)
    batch = db.batch()
    for snap in ok:  # a sweep is at most 500 messages: one commit
        batch.update(snap.reference, {"published_at": firestore.SERVER_TIMESTAMP,
                                      "publish_attempts": firestore.Increment(1)})
    if ok:
        batch.commit()
    kv(log, logging.DEBUG, "outbox.swept", published=len(ok), failed=failed)
    return SweepResult(len(ok), failed, len(snaps) == limit, first_error)


class OutboxRelay:
    """A background loop: sweep, then sleep ``idle_s`` when there was nothing (or wait for a
    failing Pub/Sub with backoff). ``start()`` / ``stop()``; safe to stop at any moment."""

    name = "outbox-relay"

    def __init__(self, db: firestore.Client, topology: Topology, *, publisher: Any = None,
                 idle_s: float = 0.1, limit: int = 500) -> None:
        from boxoffice.messaging.topology import publisher_client

        self.db = db
        self.topology = topology
        self.publisher = publisher or publisher_client()
        self.idle_s = idle_s
        self.limit = limit
        self.published = 0
        self.errors = 0
        self.topology_recreated = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> SweepResult:
        result = sweep(self.db, self.publisher, self.topology, limit=self.limit)
        self.published += result.published
        return result

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                result = self.run_once()
                failures = 0 if not result.failed else failures + 1
                if result.error is not None and self._heal(result.error):
                    continue
                if result.full and not result.failed:
                    continue
                pause = self.idle_s if not result.failed else min(5.0, 0.2 * 2 ** failures)
            except Exception as exc:  # noqa: BLE001 - a loop must survive a Firestore hiccup
                self.errors += 1
                failures += 1
                pause = min(5.0, 0.2 * 2 ** failures)
                kv(log, logging.WARNING, "outbox.sweep_failed", error=repr(exc))
            self._stop.wait(pause)

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
                "errors": self.errors, "topology_recreated": self.topology_recreated}

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
