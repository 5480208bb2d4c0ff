"""The local runner of the inventory trigger, and the hold sweeper, as worker loops.

``InventoryTriggerLoop`` watches every inventory shard, turns each change of a shard into an
``InventoryChange`` (``before`` from its last look at the document) and feeds the same
``deliver``/``handle_inventory_change`` as the Cloud Function, with the same retries and dead
letters. It coalesces by itself: changes of one event that arrive while that event's summary
write is deferred are merged, and one refresh (which reads all shards) answers them all.

How it watches (``listen``; the environment's ``BOXOFFICE_INVENTORY_LISTEN=1`` picks the listener):
- polling, the default: every ``poll_s`` one collection-group query for the shards whose
  ``changed_at`` (the commit time every shard write stamps, ``store.documents.shard_move``) is at
  or after the newest seen minus ``overlap_s``; a shard whose ``update_time`` it already saw is
  skipped. Every ``rescan_s`` (5 minutes: every shard write of this code stamps, so it is a
  backstop, and it reads every shard of every event) it reads every shard (a write that did not
  stamp ``changed_at``, a removed shard). On the emulator every open listener is evaluated inside every commit that
  touches what it watches, so a listener on every shard slows every purchase (docs/decisions.md).
- a collection-group listener on every shard, with a probe that notices a deaf listener.

Catch-up: the first full read (the poller's first scan, or the listener's first snapshot) holds
every shard document, so on start every event is checked once; any shard written while the
worker was down has ``update_time`` after the summary's ``as_of`` and gets it recomputed.

Many events at once: ``threads`` threads take ready events (never one event on two threads),
so a sale on one event does not make another wait behind it.

The last change of a burst is never left unwritten while nothing else happens: a change whose
write is deferred (the event document was written less than ``min_interval_s`` ago) is kept with
a due time and handled then, and a change whose delivery failed every attempt (dead-lettered in
``trigger_failures``) is kept too and tried again ``retry_dead_s`` later, until a summary reflects
it (its dead letters are then marked resolved).

It also records the figures of the design: per change, the lag from the shard commit to the
commit of the summary that reflects it (split at the moment this loop saw the change; changes
committed before the loop started are counted apart, as caught up); per event, the times the
summary was written.
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
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud import firestore

from boxoffice.domain.availability import DEFAULT_MIN_INTERVAL_S, SUMMARY_LEAD_S, same_counts
from boxoffice.log import kv
from boxoffice.retry import Backoff
from boxoffice.services.summary import DEFERRED, WRITTEN
from boxoffice.stats import percentile
from boxoffice.store.documents import INVENTORY, SHARD_CHANGED_AT, shards_changed_since
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
# "1": the trigger listens to the shards instead of polling them (see the module docstring).
INVENTORY_LISTEN_ENV = "BOXOFFICE_INVENTORY_LISTEN"
# A change whose summary came later than this is logged with where its time went.
SLOW_CHANGE_S = 2.0


def _update_time(doc: Any) -> datetime:
    """A snapshot's ``update_time`` as a datetime: collection-group query results of this client
    carry the raw protobuf Timestamp (listener and document reads give a datetime)."""
    t = doc.update_time
    return t if isinstance(t, datetime) else DatetimeWithNanoseconds.from_timestamp_pb(t)


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
        listen: bool | None = None,
        poll_s: float = 0.2,
        rescan_s: float = 300.0,
        overlap_s: float = 1.0,
    ) -> None:
        self.db = db
        self.listen = os.environ.get(INVENTORY_LISTEN_ENV, "0") == "1" if listen is None else listen
        self.poll_s = poll_s
        self.rescan_s = rescan_s
        self.overlap_s = overlap_s
        self._seen_at: dict[str, datetime] = {}  # update_time of the last look at each shard
        self._watermark: datetime | None = None  # the newest ``changed_at`` the poller saw
        self._poller: threading.Thread | None = None
        self.poll_failures = 0  # consecutive failed polls (Firestore away)
        self.polls = 0  # successful polls and rescans, and the shard documents they read (the
        self.docs_read = 0  # polling's cost: the overlap re-reads recently written shards)
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
        # Where a change's lag goes: commit -> seen by this loop (the poll or the listener), and
        # seen -> the commit of the summary that reflects it (deferrals, the refresh, races).
        self._seen_at_wall: dict[str, datetime] = {}
        self.detect_s: list[float] = []
        self.reflect_s: list[float] = []
        self._deferrals: dict[str, int] = {}  # per event: deferred writes since its last summary
        self.slow_changes = 0
        # Changes committed before this loop started (found by its first scan: e.g. the shards of
        # an event created while the worker was starting) are caught up, not lagging: counted
        # apart, so that the lag figures are those of the changes made while it runs.
        self._started_wall: datetime | None = None
        self.caught_up = 0
        self.write_times: dict[str, list[datetime]] = {}
        self.initial_snapshot = threading.Event()
        # The listener's health check: a probe document in a collection named like the shards'
        # (so this very listener sees it), rewritten every ``LISTENER_PROBE_S``.
        self._probe_ref = (db.collection(OPS).document("listener-probe").collection(INVENTORY)
                           .document(uuid.uuid4().hex))
        self._probe_written: tuple[int, float] | None = None  # (nonce, monotonic time of the write)
        self._probe_seen = -1
        self.deaf = False

    # --- watching the shards ------------------------------------------------------------------

    def _observe(self, path: str, event_id: str, shard_id: str, after: dict[str, Any] | None,
                 when: datetime | None) -> None:
        """One look at a shard (``after`` None: removed); the caller holds ``self._cv``."""
        if after is not None and when is not None:
            if self._seen_at.get(path) == when:
                return  # the poller's overlap, or a rescan, showing a version already seen
            self._seen_at[path] = when
        else:
            self._seen_at.pop(path, None)
        before = self._last_seen.get(path)
        self._last_seen[path] = after
        if same_counts(before, after) or (before is None and after is None):
            return
        change = InventoryChange(event_id=event_id, shard_id=shard_id, before=before, after=after,
                                 change_id=change_id_for(event_id, shard_id, when), change_time=when)
        self.changes_seen += 1
        self._seen_at_wall[change.change_id] = datetime.now(UTC)
        self._pending.setdefault(event_id, []).append(change)
        self._due.setdefault(event_id, 0.0)

    def _on_snapshot(self, docs: Any, changes: Any, read_time: datetime) -> None:
        with self._cv:
            for change in changes:
                doc = change.document
                ref = doc.reference
                if ref.path.startswith(f"{OPS}/"):
                    if ref.id == self._probe_ref.id:
                        self._probe_seen = max(self._probe_seen, int((doc.to_dict() or {}).get("nonce", -1)))
                    continue
                after = None if change.type.name == "REMOVED" else (doc.to_dict() or {})
                when = doc.update_time if after is not None else read_time
                self._observe(ref.path, ref.parent.parent.id, ref.id, after, when)
            self._cv.notify_all()
        self.initial_snapshot.set()

    def _take_docs(self, docs: list[Any], *, removed_after: datetime | None = None) -> None:
        """Feed shard documents read by the poller. ``removed_after``: ``docs`` is every shard
        there is (a rescan), so a shard seen before and missing now was removed."""
        with self._cv:
            self.polls += 1
            self.docs_read += len(docs)
            present = set()
            for doc in docs:
                ref = doc.reference
                if ref.path.startswith(f"{OPS}/"):
                    continue  # a listener's probe document, in a collection named like the shards'
                present.add(ref.path)
                after = doc.to_dict() or {}
                self._observe(ref.path, ref.parent.parent.id, ref.id, after, _update_time(doc))
                stamp = after.get(SHARD_CHANGED_AT)
                if isinstance(stamp, datetime) and (self._watermark is None or stamp > self._watermark):
                    self._watermark = stamp
            if removed_after is not None:
                for path in [p for p, doc in self._last_seen.items() if doc is not None and p not in present]:
                    parts = path.split("/")  # events/{event}/inventory/{shard}
                    self._observe(path, parts[-3], parts[-1], None, removed_after)
            self._cv.notify_all()

    def _rescan(self) -> None:
        started = datetime.now(UTC)
        docs = list(self.db.collection_group(INVENTORY).stream(timeout=60))
        self._take_docs(docs, removed_after=started)
        with self._cv:
            if self._watermark is None:  # no shard stamped yet: anything from now on is new
                self._watermark = started
        self.initial_snapshot.set()

    def _poll_changed(self) -> None:
        with self._cv:
            since = (self._watermark or datetime.now(UTC)) - timedelta(seconds=self.overlap_s)
        # A bounded wait: behind a cut connection a query can hang, and the next poll catches up.
        self._take_docs(list(shards_changed_since(self.db, since).stream(timeout=10)))

    def _poll(self) -> None:
        next_rescan = 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if time.monotonic() >= next_rescan:
                    self._rescan()
                    next_rescan = time.monotonic() + self.rescan_s
                else:
                    self._poll_changed()
                self.poll_failures = 0
            except Exception as exc:  # noqa: BLE001 - Firestore away: poll again, catch up after
                self.poll_failures += 1
                kv(log, logging.WARNING, "inventory.poll_failed", failures=self.poll_failures,
                   error=f"{type(exc).__name__}: {exc}"[:300])
            # Polls start every poll_s (not poll_s after the last one ended: under load a query
            # takes a few hundred ms, which would stretch every change's detection by as much).
            self._stop.wait(max(0.05, started + self.poll_s - time.monotonic()))

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
                              backoff=self.backoff, wait=False, min_interval_s=self.min_interval_s,
                              lead_s=SUMMARY_LEAD_S)
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
            with self._cv:
                self._deferrals[event_id] = self._deferrals.get(event_id, 0) + 1
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
        with self._cv:
            deferrals = self._deferrals.pop(event_id, 0)
            seen = {c.change_id: self._seen_at_wall.pop(c.change_id, None) for c in batch}
            if write_time is None:
                return
            if outcome.result == WRITTEN:
                self.write_times.setdefault(event_id, []).append(write_time)
            for change in batch:
                if change.change_time is None or change.change_time > write_time:
                    continue
                if self._started_wall is not None and change.change_time < self._started_wall:
                    self.caught_up += 1
                    continue
                lag = (write_time - change.change_time).total_seconds()
                self.lags_s.append(lag)
                seen_at = seen.get(change.change_id)
                if seen_at is None:
                    continue
                detect = (seen_at - change.change_time).total_seconds()
                self.detect_s.append(detect)
                self.reflect_s.append(lag - detect)
                if lag > SLOW_CHANGE_S:
                    self.slow_changes += 1
                    kv(log, logging.INFO, "inventory.slow_change", event_id=event_id, lag_s=round(lag, 3),
                       seen_after_s=round(detect, 3), deferrals=deferrals, result=outcome.result,
                       changes_in_write=len(batch))

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
        self._started_wall = datetime.now(UTC)
        self._threads = [threading.Thread(target=self._run, name=f"{self.name}-{i}", daemon=True)
                         for i in range(max(1, self.threads))]
        for thread in self._threads:
            thread.start()
        if self.listen:
            self._watch = self.db.collection_group(INVENTORY).on_snapshot(self._on_snapshot)
            threading.Thread(target=self._probe, name=f"{self.name}-probe", daemon=True).start()
        else:
            self._poller = threading.Thread(target=self._poll, name=f"{self.name}-poll", daemon=True)
            self._poller.start()

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
        if self._poller is not None:
            self._poller.join(timeout)
            self._poller = None
        if not self.listen:
            return
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
        # A poller that fails keeps trying (Firestore away is no reason to restart the part).
        listening = self._watch is None or bool(getattr(self._watch, "is_active", True))
        polling = self.listen or (self._poller is not None and self._poller.is_alive())
        alive = (bool(self._threads) and all(t.is_alive() for t in self._threads) and listening and polling
                 and not self.deaf)
        return {"alive": alive, "mode": "listen" if self.listen else "poll",
                "pending_events": len(self._pending) + len(self._inflight),
                "poll_failures": self.poll_failures, "threads": len(self._threads)} | self.stats()

    def stats(self) -> dict[str, Any]:
        """Lag (shard commit -> summary commit) and event-document write rates."""
        with self._cv:
            lags = list(self.lags_s)
            detect, reflect = list(self.detect_s), list(self.reflect_s)
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
            "polls": self.polls,
            "docs_read": self.docs_read,
            "dead_letters": self.dead_letters,
            "lag_samples": len(lags),
            "lag_p50_s": percentile(lags, 50),
            "lag_p99_s": percentile(lags, 99),
            "lag_max_s": max(lags) if lags else None,
            "lag_mean_s": statistics.fmean(lags) if lags else None,
            "seen_p50_s": percentile(detect, 50),  # commit -> seen by the loop
            "seen_p99_s": percentile(detect, 99),
            "reflected_p50_s": percentile(reflect, 50),  # seen -> the summary's commit
            "reflected_p99_s": percentile(reflect, 99),
            "slow_changes": self.slow_changes,  # lag over SLOW_CHANGE_S (each logged)
            "caught_up_at_start": self.caught_up,  # committed before the loop started: not in the lags
            "summary_writes": sum(len(ts) for ts in writes.values()),
            "summary_writes_max_in_1s": max_per_s,
            "summary_writes_per_s_mean": statistics.fmean(rates) if rates else None,
            "summary_min_gap_s": min_gap,
        }

