"""The allocator's queue progress on the real emulator: written with its answers, fenced like
them, carried on by the next holder, and what a queued request's place is computed from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from boxoffice.domain.allocation import RequestKind, TicketRequest
from boxoffice.domain.model import SaleStatus
from boxoffice.services.admission import queue_place
from boxoffice.services.allocator import EventAllocator
from boxoffice.services.events import create_event
from boxoffice.store.admission_queue import admission_queue
from boxoffice.store.leases import LeaseLost, lease_ref, read_queue_progress


def requests(event_id: str, start: datetime, names: list[str], step_s: float = 0.1) -> list[TicketRequest]:
    return [TicketRequest(id=f"o_{n}", kind=RequestKind.PURCHASE, event_id=event_id, user_id=f"u-{n}", quantity=1,
                          idempotency_key="k", arrived_at=start + timedelta(seconds=i * step_s))
            for i, n in enumerate(names)]


def test_the_progress_lands_with_the_answers_is_fenced_and_a_new_holder_carries_it_on(db):
    # A draft event: the session's allocator leaves it alone; this test plays the allocators.
    event = create_event(db, name="Progress", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=1),
                         price=100, currency="EUR", capacity=10, status=SaleStatus.DRAFT)
    assert read_queue_progress(db, event.id) is None
    assert queue_place(db, event.id, datetime.now(UTC)).state == "waiting_for_allocator"

    t0 = datetime.now(UTC) - timedelta(seconds=5)
    first = EventAllocator(db, admission_queue(db.project), event.id, "first", lease_ttl_s=60)
    assert first._hold_lease()
    assert first._commit_batch(requests(event.id, t0, ["a", "b", "c", "d", "e"])) == 5
    progress = read_queue_progress(db, event.id)
    assert progress is not None and progress.live
    assert progress.answered_through == t0 + timedelta(seconds=0.4)
    assert progress.answers_per_s > 0 and progress.arrivals_per_s is not None
    assert db.collection("requests").document("o_e").get().exists  # the answers it describes

    # A zombie's batch fails as a whole: its progress is not written either.
    lease_ref(db, event.id).update({"holder": "successor", "epoch": 99, "expires_at": datetime.now(UTC)})
    with pytest.raises(LeaseLost):
        first._commit_batch(requests(event.id, t0 + timedelta(seconds=3), ["z"]))
    assert read_queue_progress(db, event.id).answered_through == t0 + timedelta(seconds=0.4)

    # The next holder (the lease expired) answers what follows and reports it.
    second = EventAllocator(db, admission_queue(db.project), event.id, "second", lease_ttl_s=60)
    assert second._hold_lease()
    assert second._commit_batch(requests(event.id, t0 + timedelta(seconds=2), ["f", "g"], step_s=0.5)) == 2
    progress = read_queue_progress(db, event.id)
    assert progress.live and progress.answered_through == t0 + timedelta(seconds=2.5)
    later = queue_place(db, event.id, t0 + timedelta(seconds=4))
    assert later.state == "queued" and later.ahead is not None and later.ahead > 0
    assert queue_place(db, event.id, t0 + timedelta(seconds=1)).state == "next"  # arrived before the latest answer

    # A clean stop gives the lease back: nothing moves until another allocator comes.
    second.stop()
    assert not read_queue_progress(db, event.id).live
    assert queue_place(db, event.id, t0 + timedelta(seconds=4)).state == "waiting_for_allocator"
