"""The local runner of the inventory trigger, and the hold sweeper, as worker loops.

``InventoryTriggerLoop`` listens to every inventory shard (a collection-group listener), turns
each snapshot change into an ``InventoryChange`` (``before`` from its last snapshot of the
document) and feeds the same ``deliver``/``handle_inventory_change`` as the Cloud Function,
with the same retries and dead letters. It coalesces by itself: changes of one event that
arrive while that event's summary write is deferred are merged, and one refresh (which reads
all shards) answers them all.

Catch-up: a listener's first snapshot holds every shard document, so on start every event is
checked once; any shard written while the worker was down has ``update_time`` after the
summary's ``as_of`` and gets the summary recomputed.

Many events at once: ``threads`` threads take ready events (never one event on two threads),
so a sale on one event does not make another wait behind it.

The last change of a burst is never left unwritten while nothing else happens: a change whose
write is deferred (the event document was written less than ``min_interval_s`` ago) is kept with
a due time and handled then, and a change whose delivery failed every attempt (dead-lettered in
``trigger_failures``) is kept too and tried again ``retry_dead_s`` later, until a summary reflects
it (its dead letters are then marked resolved).

It also records the figures of the design: per change, the lag from the shard commit to the
commit of the summary that reflects it; per event, the times the summary was written.
"""

from __future__ import annotations

import itertools
import logging
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from google.cloud import firestore

from boxoffice.domain.availability import DEFAULT_MIN_INTERVAL_S, same_counts
from boxoffice.log import kv
from boxoffice.retry import Backoff
from boxoffice.services.summary import DEFERRED, WRITTEN
from boxoffice.store.documents import INVENTORY
from boxoffice.store.messaging import OPS
from boxoffice.triggers.inventory import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    InventoryChange,
    change_id_for,
    deliver,
    handle_inventory_change,
    resolve_failures,
)

log = logging.getLogger(__name__)

# How often the trigger checks that its listener still hears (an environment setting: tests).
LISTENER_PROBE_S = float(os.environ.get("BOXOFFICE_LISTENER_PROBE_S", "15"))


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


class InventoryTriggerLoop:
    name = "inventory-trigger"

    def __init__(
        self,
        db: firestore.Client,
        *,
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: Backoff = DEFAULT_BACKOFF,
        handler: Callable[..., Any] = handle_inventory_change,
        threads: int = 8,
        retry_dead_s: float = 5.0,
    ) -> None:
        self.db = db
        self.threads = threads
        self.retry_dead_s = retry_dead_s
        self.min_interval_s = min_interval_s
        self.attempts = attempts
        self.backoff = backoff
        self.handler = handler
        self._cv = threading.Condition()
        self._pending: dict[str, list[InventoryChange]] = {}
        self._due: dict[str, float] = {}
        self._last_seen: dict[str, dict[str, Any] | None] = {}
        self._inflight: set[str] = set()
        self._dead: set[str] = set()  # events with a dead letter not yet repaired by this loop
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch: Any = None
        self.changes_seen = 0
        self.max_inflight = 0  # most events handled at the same time (figures, tests)
        self.dead_letters = 0
        self.lags_s: list[float] = []
        self.write_times: dict[str, list[datetime]] = {}
        self.initial_snapshot = threading.Event()
        # The listener's health check: a probe document in a collection named like the shards'
        # (so this very listener sees it), rewritten every ``LISTENER_PROBE_S``.
        self._probe_ref = (db.collection(OPS).document("listener-probe").collection(INVENTORY)
                           .document(uuid.uuid4().hex))
        self._probe_written: tuple[int, float] | None = None  # (nonce, monotonic time of the write)
        self._probe_seen = -1
        self.deaf = False

    # --- listener --------------------------------------------------------------------------

    def _on_snapshot(self, docs: Any, changes: Any, read_time: datetime) -> None:
        with self._cv:
            for change in changes:
                doc = change.document
                ref = doc.reference
                if ref.path.startswith(f"{OPS}/"):
                    if ref.id == self._probe_ref.id:
                        self._probe_seen = max(self._probe_seen, int((doc.to_dict() or {}).get("nonce", -1)))
                    continue
                event_id = ref.parent.parent.id
                after = None if change.type.name == "REMOVED" else (doc.to_dict() or {})
                before = self._last_seen.get(ref.path)
                self._last_seen[ref.path] = after
                if same_counts(before, after):
                    continue
                when = doc.update_time if after is not None else read_time
                self.changes_seen += 1
                self._pending.setdefault(event_id, []).append(InventoryChange(
                    event_id=event_id, shard_id=ref.id, before=before, after=after,
                    change_id=change_id_for(event_id, ref.id, when), change_time=when))
                self._due.setdefault(event_id, 0.0)
            self._cv.notify_all()
        self.initial_snapshot.set()

    # --- processing ------------------------------------------------------------------------

    def _next(self) -> tuple[str, list[InventoryChange]] | None:
        with self._cv:
            while not self._stop.is_set():
                now = time.monotonic()
                ready = [e for e in self._pending if e not in self._inflight and self._due.get(e, 0.0) <= now]
                if ready:
                    event_id = min(ready, key=lambda e: self._due.get(e, 0.0))
                    self._due.pop(event_id, None)
                    self._inflight.add(event_id)
                    self.max_inflight = max(self.max_inflight, len(self._inflight))
                    return event_id, self._pending.pop(event_id)
                soonest = min((self._due.get(e, 0.0) for e in self._pending if e not in self._inflight),
                              default=now + 0.5)
                self._cv.wait(max(0.01, min(0.5, soonest - now)))
            return None

    def _requeue(self, event_id: str, batch: list[InventoryChange], delay_s: float) -> None:
        """Keep ``batch`` for later (merged with changes that arrived meanwhile): the coalesced
        trailing update is scheduled, never dropped."""
        with self._cv:
            self._pending[event_id] = batch + self._pending.get(event_id, [])
            due = time.monotonic() + delay_s
            # A change that arrived while this batch was in flight must not pull the retry of a
            # deferred write forward (it would only be deferred again): the later due time wins.
            self._due[event_id] = max(due, self._due.get(event_id, 0.0))
            self._cv.notify_all()

    def _done(self, event_id: str) -> None:
        with self._cv:
            self._inflight.discard(event_id)
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            event_id, batch = item
            try:
                self._handle(event_id, batch)
            finally:
                self._done(event_id)

    def _handle(self, event_id: str, batch: list[InventoryChange]) -> None:
        latest = max(batch, key=lambda c: c.change_time or datetime.min)
        try:
            outcome = deliver(self.db, latest, handler=self.handler, attempts=self.attempts,
                              backoff=self.backoff, wait=False, min_interval_s=self.min_interval_s)
        except Exception as exc:  # noqa: BLE001 - the dead letter could not be written: keep it
            kv(log, logging.ERROR, "worker.change_kept", event_id=event_id, error=f"{type(exc).__name__}: {exc}")
            self._requeue(event_id, batch, self.retry_dead_s)
            return
        if outcome is None:
            # Recorded in trigger_failures; kept as well, so the summary is repaired even if no
            # other change of this event ever comes.
            self.dead_letters += 1
            with self._cv:
                self._dead.add(event_id)
            self._requeue(event_id, batch, self.retry_dead_s)
            return
        if outcome.result == DEFERRED:
            self._requeue(event_id, batch, outcome.wait_s)
            return
        self._record(event_id, batch, outcome)
        with self._cv:
            repaired = event_id in self._dead
            self._dead.discard(event_id)
        if repaired:
            resolve_failures(self.db, event_id)

    def _record(self, event_id: str, batch: list[InventoryChange], outcome: Any) -> None:
        write_time = outcome.write_time
        if write_time is None:
            return
        with self._cv:
            if outcome.result == WRITTEN:
                self.write_times.setdefault(event_id, []).append(write_time)
            for change in batch:
                if change.change_time is not None and change.change_time <= write_time:
                    self.lags_s.append((write_time - change.change_time).total_seconds())

    # --- listener health ---------------------------------------------------------------------

    def _probe(self) -> None:
        """Detect a deaf listener. After a network partition a Firestore listener can stay
        "active" and never deliver again (seen with the emulator behind a cut connection). A
        probe that was written but not heard within ``LISTENER_PROBE_S`` marks the loop not
        alive: its process exits and the supervisor restarts it, and the new listener's first
        snapshot catches up on everything missed. A write that fails (Firestore away) is not
        held against the listener."""
        nonce = 0
        while not self._stop.wait(LISTENER_PROBE_S):
            written = self._probe_written
            if written and self._probe_seen < written[0] and time.monotonic() - written[1] > LISTENER_PROBE_S:
                self.deaf = True
                kv(log, logging.ERROR, "inventory.listener_deaf", waited_s=round(time.monotonic() - written[1], 1))
                return
            if written and self._probe_seen < written[0]:
                continue  # still waiting for the last one
            nonce += 1
            try:
                self._probe_ref.set({"nonce": nonce})
                self._probe_written = (nonce, time.monotonic())
            except Exception as exc:  # noqa: BLE001 - Firestore away: nothing to judge the listener by
                kv(log, logging.WARNING, "inventory.probe_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    # --- loop interface --------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, name=f"{self.name}-{i}", daemon=True)
                         for i in range(max(1, self.threads))]
        for thread in self._threads:
            thread.start()
        self._watch = self.db.collection_group(INVENTORY).on_snapshot(self._on_snapshot)
        threading.Thread(target=self._probe, name=f"{self.name}-probe", daemon=True).start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._watch is not None:
            self._watch.unsubscribe()
            self._watch = None
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        try:
            self._probe_ref.delete(timeout=5)
        except Exception:  # noqa: BLE001 - best effort: a leftover probe is one tiny document
            pass

    def idle(self) -> bool:
        """Nothing pending or in flight: every change seen so far is reflected."""
        with self._cv:
            return self.initial_snapshot.is_set() and not self._pending and not self._inflight

    def status(self) -> dict[str, Any]:
        # The listener recovers from transient errors by itself; one that gave up (is_active
        # false) makes the part "not alive", and its process exits for the supervisor to restart.
        listening = self._watch is None or bool(getattr(self._watch, "is_active", True))
        alive = bool(self._threads) and all(t.is_alive() for t in self._threads) and listening and not self.deaf
        return {"alive": alive, "pending_events": len(self._pending) + len(self._inflight),
                "threads": len(self._threads)} | self.stats()

    def stats(self) -> dict[str, Any]:
        """Lag (shard commit -> summary commit) and event-document write rates."""
        with self._cv:
            lags = list(self.lags_s)
            writes = {e: sorted(ts) for e, ts in self.write_times.items()}
        max_per_s = 0
        rates = []
        min_gap = None
        for ts in writes.values():
            for i, t in enumerate(ts):
                in_window = sum(1 for u in ts[i:] if (u - t).total_seconds() < 1.0)
                max_per_s = max(max_per_s, in_window)
            if len(ts) > 1:
                span = (ts[-1] - ts[0]).total_seconds()
                rates.append((len(ts) - 1) / span if span > 0 else float("inf"))
                gap = min((b - a).total_seconds() for a, b in itertools.pairwise(ts))
                min_gap = gap if min_gap is None else min(min_gap, gap)
        return {
            "changes_seen": self.changes_seen,
            "dead_letters": self.dead_letters,
            "lag_samples": len(lags),
            "lag_p50_s": percentile(lags, 50),
            "lag_p99_s": percentile(lags, 99),
            "lag_max_s": max(lags) if lags else None,
            "lag_mean_s": statistics.fmean(lags) if lags else None,
            "summary_writes": sum(len(ts) for ts in writes.values()),
            "summary_writes_max_in_1s": max_per_s,
            "summary_writes_per_s_mean": statistics.fmean(rates) if rates else None,
            "summary_min_gap_s": min_gap,
        }

