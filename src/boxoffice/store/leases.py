"""The allocator's lease on an event: ``allocator_leases/{eventId}``.

One allocator at a time decides an event's requests. It holds the lease document
{holder, epoch, expires_at} and renews it while it works (at most about once a second, the
document's sustained write rate); another allocator takes it over only once it has expired,
with a write guarded by the ``update_time`` it read, so two contenders cannot both win, and the
new holder bumps ``epoch``.

Fencing: every allocator commit runs in a transaction that first reads the lease
(``require_lease``) and fails unless the holder and epoch are still this allocator's. A
transaction's read makes its commit conditional on the document being unchanged (the
emulator and PESSIMISTIC databases lock it; OPTIMISTIC databases fail the commit when it
changed), so a zombie allocator that lost its lease while paused cannot land a batch, however
late it wakes up: its batch fails as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

LEASES = "allocator_leases"


class LeaseLost(Exception):
    """Another allocator holds the event's lease now: stop deciding its requests."""


@dataclass(frozen=True)
class Lease:
    event_id: str
    holder: str
    epoch: int
    expires_at: datetime


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
            ref.create({"holder": holder, "epoch": 1, "expires_at": expires, "acquired_at": firestore.SERVER_TIMESTAMP})
            return Lease(event_id, holder, 1, expires)
        doc = snap.to_dict() or {}
        if doc.get("holder") != holder and doc.get("expires_at") and doc["expires_at"] > now:
            return None
        epoch = int(doc.get("epoch", 0)) + 1
        ref.update({"holder": holder, "epoch": epoch, "expires_at": expires,
                    "acquired_at": firestore.SERVER_TIMESTAMP},
                   option=db.write_option(last_update_time=snap.update_time))
        return Lease(event_id, holder, epoch, expires)
    except (gexc.FailedPrecondition, gexc.Conflict, gexc.NotFound):
        return None  # another contender wrote first


def require_lease(db: firestore.Client, transaction: Any, lease: Lease) -> None:
    """Inside a transaction: read the lease and fail (``LeaseLost``) unless it is still ``lease``."""
    snap = lease_ref(db, lease.event_id).get(transaction=transaction)
    doc = snap.to_dict() or {} if snap.exists else {}
    if doc.get("holder") != lease.holder or int(doc.get("epoch", 0)) != lease.epoch:
        raise LeaseLost(f"lease of {lease.event_id} is now {doc.get('holder')} epoch {doc.get('epoch')}")


def stage_renewal(db: firestore.Client, transaction: Any, lease: Lease, ttl_s: float) -> Lease:
    """Inside a transaction that called ``require_lease``: push the expiry ``ttl_s`` ahead."""
    expires = _now() + timedelta(seconds=ttl_s)
    transaction.update(lease_ref(db, lease.event_id), {"expires_at": expires, "renewed_at": firestore.SERVER_TIMESTAMP})
    return Lease(lease.event_id, lease.holder, lease.epoch, expires)


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
