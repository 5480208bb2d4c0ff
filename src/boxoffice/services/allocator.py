"""Use case: the batch allocator of one event. Many requests decided in memory, one atomic commit.

``EventAllocator.step`` is one turn of the allocator's loop:

1. hold the event's lease (``store.leases``), or do nothing while another allocator holds it;
2. pull the next requests from the event's admission queue, in arrival order
   (``store.admission_queue``; the ordered subscription holds back what follows an
   unacknowledged batch);
3. read, in one round trip, the event, the answers already written for these requests (a
   redelivered request that was answered is skipped) and the buyers' records (and, only when a
   commit was refused, the orders and holds the requests would create); and query the shards
   with tickets;
4. decide every request in memory (``domain.allocation.allocate``: arrival order, limits,
   sold out);
5. commit one batch (staged by ``store.encoded_batch``: the library's write rules, encoded
   straight to protobuf): the lease fence first (a zombie's batch fails as a whole; it also carries
   the queue's progress, ``domain.queue_progress``, for a queued buyer's place), the shard
   increments, every order with its tickets, outbox message and buyer record, every hold, and
   every request's answer;
6. acknowledge the messages only after that commit landed: a crash before it loses nothing
   (the batch is redelivered, after the ack deadline, before anything that arrived after it), a
   crash after it answers nothing twice (answers exist). A batch that could not be committed
   (lease lost, commit refused five times) is left to the ack deadline in the same way: never
   nacked, which on the emulator lets later requests overtake it.

It also keeps the event's availability summary close to the shards: after a batch, at most once
a second, through the same guarded ``refresh_summary`` as the inventory trigger (monotonic
``summary.as_of``), so the two writers never undo each other.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain.allocation import (
    DEFAULT_POOL,
    Allocation,
    Decision,
    Grant,
    Refusal,
    RequestKind,
    Stock,
    TicketRequest,
    allocate,
)
from boxoffice.domain.availability import DEFAULT_MIN_INTERVAL_S, SUMMARY_LEAD_S
from boxoffice.domain.errors import EventNotFound, IdempotencyConflict, SoldOut
from boxoffice.domain.model import Event, ShardMove
from boxoffice.domain.queue_progress import QueueMeter
from boxoffice.domain.seating import SeatBook, SeatMap
from boxoffice.log import kv
from boxoffice.services.summary import refresh_summary
from boxoffice.store.admission_queue import AdmissionQueue, Delivery
from boxoffice.store.allocation import stage_grant, stage_take
from boxoffice.store.documents import (
    buyer_from_doc,
    buyer_ref,
    event_from_doc,
    event_ref,
    hold_ref,
    inventory_col,
    order_ref,
    seat_releases_col,
    seats_col,
    section_ref,
)
from boxoffice.store.encoded_batch import EncodedWriteBatch
from boxoffice.store.leases import Lease, LeaseLost, landed, release, renew, stage_fence, still_ours, try_acquire
from boxoffice.store.requests import Answer, answer_from_doc, request_ref, stage_answer

log = logging.getLogger(__name__)

DEFAULT_BATCH = 1000  # requests pulled per commit (the emulator hands out at most 100 a pull)
DEFAULT_LEASE_TTL_S = 5.0
COMMIT_RETRIES = 5
ANSWERED_REMEMBERED = 200_000  # request ids kept to skip repeats unread (about 20 MB at most)
STOCK_REMEMBERED_S = 1.0  # how long the stock left after a commit stands in for reading the shards
# The deadline of an idle turn's pull. Pub/Sub holds a pull until a message comes (the pull
# returns then: measured 0.02-0.06 s after the publish on the emulator) or the deadline; the
# emulator answers a pull whose deadline is 1 s or less at once, empty, and holds a longer one
# for its deadline minus about 1 s. With the 0.5 s this was, an idle allocator spun: about 1,100
# empty pulls a second, a core of CPU between it and the Pub/Sub emulator. 1.25 s: a held pull
# on both (0.25 s on the emulator), and idle chores (lease renewal at half the 5 s lease,
# sections and summary at most once a second) still run at least every 1.25 s.
PULL_DEADLINE_S = 1.25


@dataclass
class AllocatorStats:
    batches: int = 0
    answered: int = 0
    granted: int = 0
    skipped: int = 0  # redeliveries already answered, and duplicates within a batch
    commit_failures: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    commit_s: list[float] = field(default_factory=list)
    read_s: list[float] = field(default_factory=list)  # per batch: the reads (and the stock query)
    decide_s: list[float] = field(default_factory=list)  # per batch: deciding and staging the writes
    summary_writes: int = 0


class EventAllocator:
    """Decides one event's requests while it holds the event's lease. Not thread-safe: one loop."""

    def __init__(
        self,
        db: firestore.Client,
        queue: AdmissionQueue,
        event_id: str,
        holder: str,
        *,
        batch_size: int = DEFAULT_BATCH,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        summary_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        write_summary: bool = True,
        encoded_writes: bool = True,
    ) -> None:
        self.db = db
        self.queue = queue
        self.event_id = event_id
        self.holder = holder
        self.batch_size = batch_size
        self.lease_ttl_s = lease_ttl_s
        self.summary_interval_s = summary_interval_s
        self.write_summary = write_summary
        self.encoded_writes = encoded_writes  # stage through store.encoded_batch (else the library's batch)
        self.lease: Lease | None = None
        self._renewed_at = 0.0
        self._summary_due = False
        self._summary_at = 0.0
        self._summary_thread: threading.Thread | None = None
        self._shard_written_at: dict[str, float] = {}
        self._remembered: Mapping[str, Mapping[str, int]] | None = None  # stock left after the last commit
        self._stock_read_at = 0.0
        self._answered_here: dict[str, int] = {}  # request id -> attempt answered under this lease
        # Reserved seating: the seats taken, kept in memory while this allocator holds the lease
        # (it is the only writer that takes seats); loaded from the seat documents on takeover.
        self._book: SeatBook | None = None
        self._seat_map: SeatMap | None = None
        self._sections_due: set[str] = set()
        self._sections_at = 0.0
        self._resync_sections = False
        self._releases_at = 0.0
        self._markers_seen: set[str] = set()  # seat-release markers applied in an idle turn, to delete
        self._meter = QueueMeter(since=datetime.now(UTC))  # the queue's progress, with every fence write
        self.stats = AllocatorStats()
        self._turn_ms: dict[str, float] = {}

    # --- the loop's turn ------------------------------------------------------------------

    def step(self, pull_timeout_s: float = PULL_DEADLINE_S) -> int:
        """One turn: the number of requests answered (0 when idle or not the lease holder)."""
        if not self._hold_lease():
            return 0
        pulled_at = time.perf_counter()
        deliveries = self.queue.pull(self.event_id, self.batch_size, timeout_s=pull_timeout_s)
        if not deliveries:
            self._meter = self._meter.drained(datetime.now(UTC))
            self._idle_chores()
            return 0
        self._turn_ms["pull"] = (time.perf_counter() - pulled_at) * 1000
        try:
            answered = self._decide_and_commit(deliveries)
        except LeaseLost:
            # Another allocator took over while this batch was in flight: its commit failed as a
            # whole; the batch is left unacknowledged and goes to the new holder after the ack
            # deadline, before anything that arrived after it. Not nacked: on the emulator a
            # nacked ordered batch lets the messages behind it through first (measured,
            # docs/decisions.md), which would break arrival order.
            kv(log, logging.WARNING, "allocator.lease_lost", event_id=self.event_id, holder=self.holder)
            self.lease = None
            return 0
        acked_at = time.perf_counter()
        self.queue.ack(self.event_id, [d.ack_id for d in deliveries])
        self._summary_due = self._summary_due or answered > 0
        chores_at = time.perf_counter()
        self._write_summary_if_due()
        self._write_sections_if_due()
        done = time.perf_counter()
        # reported with the next batch (allocator.batch): where a turn's time goes
        self._turn_ms["ack"], self._turn_ms["chores"] = (chores_at - acked_at) * 1000, (done - chores_at) * 1000
        return answered

    def stop(self) -> None:
        """Free the seats given back since the last look and write the section documents still
        due, then give the lease back (a standby takes over at once instead of after the
        expiry). A seat given back after that last look, while the lease is still held, waits
        for the sweeper (``services.sections``)."""
        if self.lease is not None:
            self._releases_at = 0.0
            self._notice_seat_releases()
            self._write_sections_if_due(force=True)
        if self._summary_thread is not None:
            self._summary_thread.join(5.0)
        if self.lease is not None:
            release(self.db, self.lease)
            self.lease = None

    # --- lease ----------------------------------------------------------------------------

    def _hold_lease(self) -> bool:
        if self.lease is not None and time.monotonic() - self._renewed_at < self.lease_ttl_s / 2:
            return True
        if self.lease is not None:
            try:
                self._renew()
                return True
            except LeaseLost:
                kv(log, logging.WARNING, "allocator.lease_lost", event_id=self.event_id, holder=self.holder)
                self.lease = None
        lease = try_acquire(self.db, self.event_id, self.holder, self.lease_ttl_s)
        if lease is None:
            return False
        self.lease, self._renewed_at = lease, time.monotonic()
        self._meter = QueueMeter(since=datetime.now(UTC))
        self._shard_written_at.clear()
        self._remembered = None
        self._answered_here.clear()
        self._book = None
        # A previous holder may have died between committing seats and writing their section
        # documents (at most once a second), with no request left to make this holder load the
        # seats: rewrite every section with a taken seat at the first idle turn.
        self._resync_sections = True
        kv(log, logging.INFO, "allocator.lease_acquired", event_id=self.event_id, holder=self.holder, epoch=lease.epoch)
        return True

    def _renew(self) -> None:
        assert self.lease is not None
        self.lease = renew(self.db, self.lease, self.lease_ttl_s, self._meter.progress(datetime.now(UTC)))
        self._renewed_at = time.monotonic()

    def _idle_chores(self) -> None:
        self._notice_seat_releases()
        self._write_summary_if_due()
        self._write_sections_if_due()

    def _notice_seat_releases(self) -> None:
        """While no request comes, seats given back still show as free within about a second:
        at most once a second, free them in the book and mark their sections due; the section
        write deletes the markers (a batch that comes first deletes them itself)."""
        if self._seat_map is None or self.lease is None or time.monotonic() - self._releases_at < 1.0:
            return
        self._releases_at = time.monotonic()
        try:
            if self._book is None:
                self._book = self._load_seat_book(self._seat_map)
            freed = self._seat_releases(self._book)
        except gexc.GoogleAPICallError as exc:
            kv(log, logging.WARNING, "allocator.seat_releases_failed", event_id=self.event_id, error=str(exc)[:200])
            return
        self._markers_seen.update(freed)
        self._sections_due.update(self._seat_map.section_of(s) for seats in freed.values() for s in seats)

    # --- one batch ------------------------------------------------------------------------

    def _decide_and_commit(self, deliveries: Sequence[Delivery]) -> int:
        requests = sorted(
            (d.request for d in deliveries if d.request is not None and d.request.event_id == self.event_id),
            key=lambda r: r.arrived_at or datetime.min.replace(tzinfo=UTC),
        )
        for attempt in range(1, COMMIT_RETRIES + 1):
            try:
                return self._commit_batch(requests, careful=attempt > 1)
            except LeaseLost:
                raise
            except (gexc.Aborted, gexc.Conflict, gexc.FailedPrecondition, gexc.ServiceUnavailable,
                    gexc.DeadlineExceeded, ValueError) as exc:
                self.stats.commit_failures += 1
                self._book = None  # a seat created meanwhile (ALREADY_EXISTS): re-read the seats
                self._remembered = None
                kv(log, logging.WARNING, "allocator.commit_failed", event_id=self.event_id, attempt=attempt,
                   error=f"{type(exc).__name__}: {exc}"[:300])
                time.sleep(0.05 * attempt)
        raise RuntimeError(f"allocator of {self.event_id} could not commit a batch of {len(requests)}")

    def _commit_batch(self, requests: list[TicketRequest], *, careful: bool = False) -> int:
        if not requests:
            return 0
        t_read = time.perf_counter()
        # Answered by this holder already (a repeated key, a message delivered twice): no read.
        known = {r.id for r in requests if self._answered_here.get(r.id, 0) >= r.attempt}
        event, answered, versions, existing, counted, counted_types = self._read(
            [r for r in requests if r.id not in known], careful)
        t_decide = time.perf_counter()
        book: SeatBook | None = None
        freed: dict[str, list[str]] = {}
        fresh, made, skipped = [], [], 0
        for r in requests:
            prior = answered.get(r.id)
            if r.id in known or (prior is not None and prior.attempt >= r.attempt):
                skipped += 1  # answered before (a redelivery or a repeated key): nothing to do
            elif r.id in existing:
                made.append(_answer_existing(r, existing[r.id]))
            else:
                fresh.append(r)
        if event is None:
            allocation = Allocation([Refusal(r, EventNotFound(self.event_id)) for r in fresh], Stock({}), counted)
        else:
            if event.seat_map is not None:
                if self._book is None:
                    self._book = self._load_seat_book(event.seat_map)
                book = self._book.copy()  # taken for good only if the batch commits
                freed = self._seat_releases(book)
            stock, remembered = self._stock()
            t_decide = time.perf_counter()
            moment = datetime.now(UTC)
            before = book.copy() if book is not None and remembered else None

            def decide(stock: Stock, seats: SeatBook | None) -> Allocation:
                return allocate(event, stock, fresh, counted, counted_types=counted_types, seats=seats, now=moment)

            allocation = decide(stock, book)
            if remembered and any(isinstance(d, Refusal) and isinstance(d.error, SoldOut)
                                  for d in allocation.decisions):
                # The remembered stock is a lower bound (tickets given back since are not in it):
                # nobody is refused for lack of tickets without a look at the shards themselves.
                book = before
                allocation = decide(self._stock(fresh=True)[0], book)
        decisions = made + allocation.decisions
        taken = _taken([d for d in decisions if isinstance(d, Grant)])
        batch_id = secrets.token_hex(4)
        assert self.lease is not None
        lease = self.lease
        now = datetime.now(UTC)
        meter = self._meter.with_batch(now, [r.arrived_at for r in requests if r.arrived_at is not None])
        # One batch, its first write the lease fence (which also renews the lease and carries the
        # queue's progress): a zombie's batch fails as a whole, and no lock outlives a killed
        # allocator (store/leases.py).
        batch = self._batch()
        staged = stage_fence(self.db, batch, lease, self.lease_ttl_s, meter.progress(now))
        for move, per_shard in taken.items():
            stage_take(self.db, batch, self.event_id, per_shard, move)
        for d in decisions:
            if isinstance(d, Grant) and d.request.id not in existing:
                assert event is not None
                stage_grant(self.db, batch, event, d, now)
            stage_answer(self.db, batch, d, batch=batch_id, epoch=lease.epoch,
                         prior_update_time=versions.get(d.request.id))
        for marker in freed:
            batch.delete(seat_releases_col(self.db, self.event_id).document(marker))
        started = time.perf_counter()
        try:
            results = batch.commit()
        except gexc.FailedPrecondition:
            if not still_ours(self.db, lease):
                raise LeaseLost(f"lease of {self.event_id} changed hands") from None
            raise
        self.lease = landed(staged, results)
        self._meter = meter
        elapsed = time.perf_counter() - started
        if event is not None and event.seat_map is not None:
            self._book = book
            self._sections_due.update(event.seat_map.section_of(s) for g in allocation.grants
                                      for line in g.lines for s in line.seat_ids)
            self._sections_due.update(event.seat_map.section_of(s) for seats in freed.values() for s in seats)
            self._markers_seen.difference_update(freed)
        self._renewed_at = time.monotonic()
        now_s = time.monotonic()
        for per_shard in taken.values():
            for sid in per_shard:
                self._shard_written_at[sid] = now_s
        if event is not None:
            self._remembered = allocation.stock.pools  # exact as of this commit, until tickets come back
        if len(self._answered_here) > ANSWERED_REMEMBERED:
            self._answered_here.clear()  # forgotten ones are found by a careful retry
        for d in decisions:
            self._answered_here[d.request.id] = max(d.request.attempt, self._answered_here.get(d.request.id, 0))
        grants = sum(1 for d in decisions if isinstance(d, Grant))
        self.stats.batches += 1
        self.stats.answered += len(decisions)
        self.stats.granted += grants
        self.stats.skipped += skipped + len(allocation.duplicates)
        self.stats.batch_sizes.append(len(decisions))
        self.stats.commit_s.append(elapsed)
        self.stats.read_s.append(t_decide - t_read)
        self.stats.decide_s.append(started - t_decide)
        kv(log, logging.INFO, "allocator.batch", event_id=self.event_id, batch=batch_id, epoch=lease.epoch,
           requests=len(requests), answered=len(decisions), granted=grants, skipped=skipped,
           left=allocation.stock.total, commit_ms=round(elapsed * 1000, 1),
           read_ms=round((t_decide - t_read) * 1000, 1), decide_ms=round((started - t_decide) * 1000, 1),
           **{f"prev_{k}_ms": round(v, 1) for k, v in self._turn_ms.items()})
        return len(decisions)

    def _batch(self) -> firestore.WriteBatch:
        return EncodedWriteBatch(self.db) if self.encoded_writes else self.db.batch()

    def _read(
        self, requests: list[TicketRequest], careful: bool = False,
    ) -> tuple[Event | None, dict[str, Answer], dict[str, Any], dict[str, Any], dict[str, int],
               dict[str, dict[str, int]]]:
        """The event (None if gone), each user's tickets bought + held, and the prior answers
        (with their versions) and orders or holds already made under the requests' ids: all of
        them when ``careful``, else only the answers of requests asked again (attempt > 1).

        A first answer is a ``create`` and an order or hold is only ever committed together with
        its answer, so a first attempt at a batch need not look for them (two thirds of the
        documents of a flash sale's batch): a request answered before (a message delivered again
        after a crash, a key asked twice) makes the commit fail as a whole on that ``create``, and
        the retries are careful. Requests this holder answered itself are skipped unread."""
        users = sorted({r.user_id for r in requests})
        ids = list(dict.fromkeys(r.id for r in requests if careful or r.attempt > 1))
        refs = [event_ref(self.db, self.event_id)]
        refs += [request_ref(self.db, i) for i in ids]
        if careful:
            refs += [order_ref(self.db, r.id) if r.kind is RequestKind.PURCHASE else hold_ref(self.db, r.id)
                     for r in {r.id: r for r in requests}.values()]
        refs += [buyer_ref(self.db, self.event_id, u) for u in users]
        snaps = {s.reference.path: s for s in self.db.get_all(refs)}
        ev = snaps[refs[0].path]
        event = event_from_doc(self.event_id, ev.to_dict() or {}) if ev.exists else None
        answered: dict[str, Answer] = {}
        versions: dict[str, Any] = {}
        existing: dict[str, Any] = {}
        for i in ids:
            snap = snaps.get(request_ref(self.db, i).path)
            if snap is not None and snap.exists:
                answered[i] = answer_from_doc(i, snap.to_dict() or {})
                versions[i] = snap.update_time
            for ref in (order_ref(self.db, i), hold_ref(self.db, i)):
                made = snaps.get(ref.path)
                if made is not None and made.exists:
                    existing[i] = made.to_dict() or {}
        counted, counted_types = {}, {}
        for u in users:
            snap = snaps[buyer_ref(self.db, self.event_id, u).path]
            buyer = buyer_from_doc(self.event_id, u, snap.to_dict() if snap.exists else None)
            counted[u], counted_types[u] = buyer.counted, buyer.counted_types
        return event, answered, versions, existing, counted, counted_types

    def _load_seat_book(self, seat_map: SeatMap) -> SeatBook:
        self._seat_map = seat_map
        sold = [snap.id for snap in seats_col(self.db, self.event_id).select([]).stream()]
        kv(log, logging.INFO, "allocator.seats_loaded", event_id=self.event_id, taken=len(sold))
        # A previous holder may have died between committing seats and writing their section
        # documents (written at most once a second): rewrite every section with a taken seat.
        self._sections_due.update(seat_map.section_of(s) for s in sold)
        return SeatBook(seat_map, sold)

    def _seat_releases(self, book: SeatBook) -> dict[str, list[str]]:
        """Seats given back since the last look (``store.allocation.stage_free_seats``), freed in
        ``book``: marker id -> seats. The caller deletes the markers in a fenced commit.

        Always after the book was loaded and before any decision from it: a marker committed
        before the load frees a seat the load already saw free (a no-op), and no marker outlives
        the commit of the first sale made from a book that saw it, so a stale marker never frees
        a seat sold again since. All markers, no limit: a partial read would break that.
        """
        freed: dict[str, list[str]] = {}
        for snap in seat_releases_col(self.db, self.event_id).stream():
            freed[snap.id] = [str(s) for s in (snap.to_dict() or {}).get("seats", ())]
            book.release(freed[snap.id])
        if freed:
            kv(log, logging.INFO, "allocator.seats_freed", event_id=self.event_id, markers=len(freed),
               seats=sum(len(v) for v in freed.values()))
        return freed

    def _stock(self, *, fresh: bool = False) -> tuple[Stock, bool]:
        """Shards with tickets, least recently written by this allocator first (spreads the
        writes), and whether they are the remembered ones.

        The allocator is the only writer that takes tickets, so what was left after its last
        commit is exact or, when tickets came back meanwhile (a cancellation, an expiry), a lower
        bound: it is used for ``STOCK_REMEMBERED_S`` after the shards were last read, which saves
        the query on most turns of a sale; a decision that would refuse for lack of tickets is
        taken again on the shards as read (``_commit_batch``)."""
        now = time.monotonic()
        if not fresh and self._remembered is not None and now - self._stock_read_at < STOCK_REMEMBERED_S:
            shards = {pool: dict(per) for pool, per in self._remembered.items()}
            remembered = True
        else:
            query = inventory_col(self.db, self.event_id).where(filter=FieldFilter("available", ">", 0))
            shards = {}
            for snap in query.stream():
                doc = snap.to_dict() or {}
                shards.setdefault(doc.get("pool") or DEFAULT_POOL, {})[snap.id] = int(doc.get("available", 0))
            self._stock_read_at, remembered = now, False
        every = [sid for pool in shards.values() for sid, n in pool.items() if n > 0]
        order = sorted(every, key=lambda sid: (self._shard_written_at.get(sid, 0.0), sid))
        return Stock(shards, order), remembered

    # --- summary --------------------------------------------------------------------------

    def _write_sections_if_due(self, *, force: bool = False) -> None:
        """The per-section documents clients listen to: at most one write a second each.

        The write is fenced by the lease like a batch of sales: an allocator that lost the lease
        without knowing it yet cannot overwrite a section with its older view of the seats.
        """
        if self._resync_sections and self.lease is not None:
            self._resync_sections = False
            if self._seat_map is None:
                snap = event_ref(self.db, self.event_id).get()
                self._seat_map = event_from_doc(self.event_id, snap.to_dict() or {}).seat_map if snap.exists else None
            if self._seat_map is not None and self._book is None:
                self._book = self._load_seat_book(self._seat_map)  # marks every section with a taken seat
        if not self._sections_due or self.lease is None or \
                (not force and time.monotonic() - self._sections_at < 1.0):
            return
        if self._book is None:
            # Dropped after a refused commit or a new lease: the sections still due (the trailing
            # write of a burst) are written from the seat documents, the source of truth.
            if self._seat_map is None:
                return
            self._book = self._load_seat_book(self._seat_map)
        batch = self._batch()
        staged = stage_fence(self.db, batch, self.lease, self.lease_ttl_s)
        for section in sorted(self._sections_due):
            batch.set(section_ref(self.db, self.event_id, section),
                      self._book.section_view(section) | {"updated_at": firestore.SERVER_TIMESTAMP})
        markers = sorted(self._markers_seen)
        for marker in markers:
            batch.delete(seat_releases_col(self.db, self.event_id).document(marker))
        try:
            self.lease = landed(staged, batch.commit())
        except gexc.FailedPrecondition:
            kv(log, logging.WARNING, "allocator.lease_lost", event_id=self.event_id, holder=self.holder)
            self.lease, self._book = None, None
            return
        except gexc.GoogleAPICallError as exc:
            kv(log, logging.WARNING, "allocator.sections_failed", event_id=self.event_id, error=str(exc)[:200])
            return
        self._renewed_at = self._sections_at = time.monotonic()
        self._sections_due.clear()
        self._markers_seen.difference_update(markers)

    def _write_summary_if_due(self) -> None:
        """Start the summary write when one is due (at most one a second), on a thread of its own:
        it reads the event and every shard and commits (0.2-0.6 s on a loaded emulator), time the
        loop spends deciding the next batch instead. One write at a time; a failed or deferred
        write leaves the summary due for the next turn."""
        if not self.write_summary or not self._summary_due or \
                time.monotonic() - self._summary_at < self.summary_interval_s - SUMMARY_LEAD_S:
            return
        if self._summary_thread is not None and self._summary_thread.is_alive():
            return
        self._summary_due, self._summary_at = False, time.monotonic()
        self._summary_thread = threading.Thread(target=self._write_summary, name=f"summary-{self.event_id}",
                                                daemon=True)
        self._summary_thread.start()

    def _write_summary(self) -> None:
        try:
            outcome = refresh_summary(self.db, self.event_id, min_interval_s=self.summary_interval_s,
                                      lead_s=SUMMARY_LEAD_S)
        except (gexc.GoogleAPICallError, EventNotFound) as exc:
            kv(log, logging.WARNING, "allocator.summary_failed", event_id=self.event_id, error=str(exc)[:200])
            self._summary_due = True
            return
        self._summary_at = time.monotonic()
        if outcome.result in ("written", "already_reflected"):
            self.stats.summary_writes += outcome.result == "written"
        else:
            self._summary_due = True  # deferred: another writer wrote less than a second ago


def _taken(grants: list[Grant]) -> dict[ShardMove, dict[str, int]]:
    out: dict[ShardMove, dict[str, int]] = {}
    for g in grants:
        move = ShardMove.SELL if g.request.kind is RequestKind.PURCHASE else ShardMove.HOLD
        per_shard = out.setdefault(move, {})
        for sid, n in g.allocations.items():
            per_shard[sid] = per_shard.get(sid, 0) + n
    return out


def _answer_existing(request: TicketRequest, made: dict[str, Any]) -> Decision:
    """A request whose order or hold already exists (its answer was lost, or an older path made
    it) is answered with it and takes nothing; another request under its id is a conflict."""
    same = (made.get("event_id"), made.get("user_id"), made.get("quantity")) == (
        request.event_id, request.user_id, request.quantity)
    if same:
        return Grant(request, {})
    return Refusal(request, IdempotencyConflict(
        f"idempotency key {request.idempotency_key!r} was already used for another request; use a new key"))
