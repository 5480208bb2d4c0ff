"""The allocator's lease on an event: ``allocator_leases/{eventId}``.

One allocator at a time decides an event's requests. It holds the lease document
{holder, epoch, expires_at} and renews it while it works (at most about once a second, the
document's sustained write rate); another allocator takes it over only once it has expired,
with a write guarded by the ``update_time`` it read, so two contenders cannot both win, and the
new holder bumps ``epoch``.

Fencing: every allocator commit is one batch whose first write updates the lease document
(its expiry, so the commit also renews the lease) with a precondition on the ``update_time``
this allocator last saw there (``stage_fence``). Only the holder writes the lease while it holds
it, so the precondition fails only after another allocator took the lease over, and then the
whole batch fails: a zombie allocator that lost its lease while paused cannot land a batch,
however late it wakes up. A plain batch, not a transaction that reads the lease: a transaction's
read takes a lock (emulator, PESSIMISTIC databases) that an allocator killed mid-transaction would
leave behind for the transaction's 60 s idle expiry, stalling its successor (measured: answers
resumed 60.2 s after the SIGKILL instead of about 10 s). The price is one write of the lease
document per batch during a sale (docs/decisions.md).

The fence write also carries the allocator's ``queue`` progress (``domain.queue_progress``):
the arrival time of the latest request answered and the recent pace, in the same commit as the
answers it describes and fenced like them, at no extra write; ``read_queue_progress`` gives it
to whoever estimates a queued request's place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from boxoffice.domain.queue_progress import QueueProgress, progress_from_doc

LEASES = "allocator_leases"


class LeaseLost(Exception):
    """Another allocator holds the event's lease now: stop deciding its requests."""


@dataclass(frozen=True)
class Lease:
    event_id: str
    holder: str
    epoch: int
    expires_at: datetime
    # The lease document's update_time after this holder's last write, as the client returns it
    # (only handed back to write_option and compared).
    version: Any


def lease_ref(db: firestore.Client, event_id: str) -> firestore.DocumentReference:
    return db.collection(LEASES).document(event_id)


def _now() -> datetime:
    return datetime.now(UTC)


def try_acquire(db: firestore.Client, event_id: str, holder: str, ttl_s: float) -> Lease | None:
    """Take the event's lease if it is free, expired, or already ours; None if someone else holds it."""
    ref = lease_ref(db, event_id)
    snap = ref.get()
    now = snap.read_time or _now()
    expires = now + timedelta(seconds=ttl_s)
    try:
        if not snap.exists:
            result = ref.create({"holder": holder, "epoch": 1, "expires_at": expires,
                                 "acquired_at": firestore.SERVER_TIMESTAMP})
            return Lease(event_id, holder, 1, expires, result.update_time)
        doc = snap.to_dict() or {}
        if doc.get("holder") != holder and doc.get("expires_at") and doc["expires_at"] > now:
            return None
        epoch = int(doc.get("epoch", 0)) + 1
        result = ref.update({"holder": holder, "epoch": epoch, "expires_at": expires,
                             "acquired_at": firestore.SERVER_TIMESTAMP},
                            option=db.write_option(last_update_time=snap.update_time))
        return Lease(event_id, holder, epoch, expires, result.update_time)
    except (gexc.FailedPrecondition, gexc.Conflict, gexc.NotFound):
        return None  # another contender wrote first


def stage_fence(db: firestore.Client, writer: Any, lease: Lease, ttl_s: float,
                progress: QueueProgress | None = None) -> Lease:
    """Stage, as the batch's FIRST write, the lease renewal guarded by ``lease.version`` (with
    the queue's ``progress`` when given).

    The returned lease's ``version`` is a placeholder until ``landed`` gives it the commit's
    update_time (the first write result of the batch).
    """
    expires = _now() + timedelta(seconds=ttl_s)
    fields: dict[str, Any] = {"expires_at": expires, "renewed_at": firestore.SERVER_TIMESTAMP}
    if progress is not None:
        fields["queue"] = progress.as_doc()
    writer.update(lease_ref(db, lease.event_id), fields, option=db.write_option(last_update_time=lease.version))
    return Lease(lease.event_id, lease.holder, lease.epoch, expires, lease.version)


def landed(lease: Lease, write_results: list[Any]) -> Lease:
    """The lease after a batch staged with ``stage_fence`` committed."""
    return Lease(lease.event_id, lease.holder, lease.epoch, lease.expires_at, write_results[0].update_time)


def renew(db: firestore.Client, lease: Lease, ttl_s: float, progress: QueueProgress | None = None) -> Lease:
    """Renew with a batch of its own (an allocator with nothing to commit). Raises ``LeaseLost``."""
    batch = db.batch()
    staged = stage_fence(db, batch, lease, ttl_s, progress)
    try:
        return landed(staged, batch.commit())
    except (gexc.FailedPrecondition, gexc.NotFound) as exc:
        raise LeaseLost(f"lease of {lease.event_id} changed hands") from exc


def still_ours(db: firestore.Client, lease: Lease) -> bool:
    """After a failed commit: is the lease document still as this holder last wrote it?"""
    snap = lease_ref(db, lease.event_id).get()
    return snap.exists and snap.update_time == lease.version


def release(db: firestore.Client, lease: Lease) -> None:
    """Give the lease up at once (a clean shutdown), so a standby need not wait for the expiry."""
    ref = lease_ref(db, lease.event_id)
    snap = ref.get()
    doc = snap.to_dict() or {} if snap.exists else {}
    if doc.get("holder") == lease.holder and int(doc.get("epoch", 0)) == lease.epoch:
        try:
            ref.update({"expires_at": snap.read_time}, option=db.write_option(last_update_time=snap.update_time))
        except (gexc.FailedPrecondition, gexc.Conflict, gexc.NotFound):
            pass


@dataclass(frozen=True)
class IdleLease:
    """The lease document as read while no allocator held it (absent, or expired): a writer that
    acts in the allocator's stead (``services.sections``) fences its commit on it
    (``stage_idle_fence``)."""

    event_id: str
    version: Any  # update_time as read; None when the document did not exist
    read_time: datetime
    sections_at: datetime | None  # when such a writer last wrote section documents

    def wait_s(self, min_interval_s: float) -> float:
        """How long to wait before the next section write keeps to ``min_interval_s``."""
        if self.sections_at is None:
            return 0.0
        return max(0.0, min_interval_s - (self.read_time - self.sections_at).total_seconds())


def read_idle_lease(db: firestore.Client, event_id: str) -> IdleLease | None:
    """The event's lease if no allocator holds it now; None while one does (unexpired)."""
    snap = lease_ref(db, event_id).get()
    now = snap.read_time or _now()
    if not snap.exists:
        return IdleLease(event_id, None, now, None)
    doc = snap.to_dict() or {}
    if doc.get("expires_at") and doc["expires_at"] > now:
        return None
    return IdleLease(event_id, snap.update_time, now, doc.get("sections_at"))


def stage_idle_fence(db: firestore.Client, writer: Any, idle: IdleLease) -> None:
    """Stage a stamp (``sections_at``) on the lease document guarded by the version read while it
    was idle (``create`` when there was none). An allocator that takes the lease meanwhile writes
    the document first (``try_acquire``), so the whole commit fails: whatever acts in an absent
    allocator's stead can never overwrite what a holder writes with an older view. A zombie
    holder whose lease expired loses it to this write, as it would to a new holder."""
    fields = {"sections_at": firestore.SERVER_TIMESTAMP}
    if idle.version is None:
        writer.create(lease_ref(db, idle.event_id), fields)
    else:
        writer.update(lease_ref(db, idle.event_id), fields, option=db.write_option(last_update_time=idle.version))


def read_queue_progress(db: firestore.Client, event_id: str) -> QueueProgress | None:
    """The event's queue progress as its allocator last wrote it (None before any); ``live`` says
    whether an allocator holds the lease now (one document read)."""
    snap = lease_ref(db, event_id).get()
    if not snap.exists:
        return None
    doc = snap.to_dict() or {}
    now = snap.read_time or _now()
    live = bool(doc.get("expires_at")) and doc["expires_at"] > now
    if doc.get("queue"):
        return progress_from_doc(doc["queue"], live=live)
    # A holder that has neither committed nor renewed yet: it reported nothing so far.
    return QueueProgress(as_of=now, answered_through=None, drained_at=None, answers_per_s=0.0,
                         arrivals_per_s=None, live=live) if live else None
