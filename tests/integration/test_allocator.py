"""The admission queue and batch allocator across OS processes, on the real emulators.

Buyers run in several processes (the simulator's app instances), allocators in others; the
crash test SIGKILLs the allocator holding the lease in the middle of a sale. Each test audits
the database afterwards: nothing oversold, every buyer answered once, arrival order kept.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain.allocation import RequestKind, TicketRequest
from boxoffice.domain.model import SaleStatus
from boxoffice.loadtest.simulator import Answer, SimulationConfig, run_simulation
from boxoffice.runtime.allocator import AllocatorProcesses
from boxoffice.services.allocator import EventAllocator
from boxoffice.services.events import create_event
from boxoffice.store.admission_queue import admission_queue
from boxoffice.store.leases import LEASES, LeaseLost, lease_ref


def answers_of(db, event_id: str) -> list[dict]:
    return [s.to_dict() for s in db.collection("requests").where(filter=FieldFilter("event_id", "==", event_id)).stream()]


def test_buyers_in_three_processes_are_answered_once_in_arrival_order(db):
    config = SimulationConfig(buyers=240, tickets=60, concurrency=30, instances=3, max_quantity=2, seed=11,
                              deadline_s=60, allocators=0)
    result = run_simulation(db, config)
    report = result.report()
    assert report["instances"] == 3
    assert {r.instance for r in result.results} == {0, 1, 2}
    assert report["tickets_sold"] == 60 and report["oversold"] == 0
    assert report["errors"] == 0, report["errors_by_kind"]
    assert report["fifo_violations"] == 0
    answers = answers_of(db, result.event_id)
    # One answer document per queued buyer: nobody lost, nobody answered twice; the others were
    # refused "sold out" by their instance from the summary, without queueing.
    at_instance = report["queue"]["sold_out_at_instance"]
    assert len(answers) + at_instance == 240 and report["queue"]["unanswered"] == 0
    assert sum(r.answer is Answer.SOLD_OUT for r in result.results) >= at_instance
    assert report["sales_per_commit"] > 1  # many buyers per commit
    assert report["audit"]["ok"], report["audit"]["problems"]


def _holder_pid(holder: str) -> int:
    return int(holder.rsplit("-", 2)[1])


def test_killing_the_allocator_mid_sale_hands_over_and_every_buyer_is_answered(db, stack, allocator):
    standby = AllocatorProcesses(stack.firestore_host, stack.pubsub_host, stack.project, count=2).start()
    ours = set(standby.pids) | set(allocator.pids)
    killed: dict[str, object] = {}

    def kill_the_holder_mid_sale() -> None:
        give_up = time.monotonic() + 120
        while time.monotonic() < give_up:
            leases = list(db.collection(LEASES).stream())
            answered = len(list(db.collection("requests").select([]).limit(150).stream()))
            if leases and answered >= 150:
                lease = leases[0].to_dict()
                pid = _holder_pid(lease["holder"])
                assert pid in ours  # only ever a process this test session started
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, at=datetime.now(UTC), epoch=lease["epoch"], holder=lease["holder"])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_holder_mid_sale)
    killer.start()
    try:
        config = SimulationConfig(buyers=900, tickets=300, concurrency=45, instances=3, seed=12, deadline_s=90,
                                  allocators=0)
        result = run_simulation(db, config)
    finally:
        killer.join()
        standby.stop()
    report = result.report()
    assert killed, "the sale ended before the allocator could be killed"
    lease = db.collection(LEASES).document(result.event_id).get().to_dict()
    assert lease["holder"] != killed["holder"] and lease["epoch"] > killed["epoch"]
    answers = answers_of(db, result.event_id)
    after = sorted(a["answered_at"] for a in answers if a["epoch"] > killed["epoch"])
    assert after, "nobody was answered after the kill"
    resumed_s = (after[0] - killed["at"]).total_seconds()
    # the lease expires (5 s), and the batch the dead allocator had pulled comes back after
    # Pub/Sub's ack deadline (10 s, its minimum); generous on a shared machine
    assert resumed_s < 30, resumed_s
    assert len(answers) + report["queue"]["sold_out_at_instance"] == 900 and report["queue"]["unanswered"] == 0
    assert report["errors"] == 0, report["errors_by_kind"]
    assert report["tickets_sold"] == 300 and report["oversold"] == 0
    assert report["fifo_violations"] == 0
    assert report["audit"]["ok"], report["audit"]["problems"]
    print(f"allocator {killed['pid']} killed; answers resumed after {resumed_s:.1f}s by epoch {lease['epoch']}")


def test_a_zombie_allocators_batch_fails_as_a_whole(db):
    # A draft event: the session's allocator leaves it alone, this test plays both allocators.
    event = create_event(db, name="Zombie", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=1), price=100,
                         currency="EUR", capacity=10, status=SaleStatus.DRAFT)
    zombie = EventAllocator(db, admission_queue(db.project), event.id, "zombie-1", lease_ttl_s=60)
    assert zombie._hold_lease() and zombie.lease is not None
    # a successor takes the lease over (as after an expiry) while the zombie is paused
    lease_ref(db, event.id).update({"holder": "successor", "epoch": zombie.lease.epoch + 1})
    request = TicketRequest(id="o_zombie", kind=RequestKind.PURCHASE, event_id=event.id, user_id="u", quantity=1,
                            idempotency_key="k", arrived_at=datetime.now(UTC))
    with pytest.raises(LeaseLost):
        zombie._commit_batch([request])
    assert not db.collection("requests").document("o_zombie").get().exists


def test_a_refusal_for_lack_of_tickets_is_decided_on_the_shards_not_on_the_stock_remembered(db, monkeypatch):
    from boxoffice.services import allocator as allocator_module
    from boxoffice.services.cancellations import cancel_order
    from boxoffice.services.releases import set_sale_status

    monkeypatch.setattr(allocator_module, "STOCK_REMEMBERED_S", 3600.0)  # remember for the whole test
    # Drafted while this test takes the lease: the session's allocator leaves the event alone.
    event = create_event(db, name="Remembered", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=1),
                         price=100, currency="EUR", capacity=4, per_order_max=4, status=SaleStatus.DRAFT)
    allocator = EventAllocator(db, admission_queue(db.project), event.id, "remembering", lease_ttl_s=60)
    assert allocator._hold_lease()
    set_sale_status(db, event.id, SaleStatus.ON_SALE)

    def ask(name: str, quantity: int) -> dict:
        request = TicketRequest(id=f"o_{name}", kind=RequestKind.PURCHASE, event_id=event.id, user_id=f"u-{name}",
                                quantity=quantity, idempotency_key="k", arrived_at=datetime.now(UTC))
        assert allocator._commit_batch([request]) == 1
        return db.collection("requests").document(request.id).get().to_dict()

    assert ask("ann", 4)["outcome"] == "order"
    assert allocator._remembered is not None and sum(allocator._remembered[p][s] for p in allocator._remembered
                                                    for s in allocator._remembered[p]) == 0
    # Two tickets come back behind the allocator's back (it only ever takes tickets).
    ann = db.collection("orders").document("o_ann").get().to_dict()
    cancel_order(db, "o_ann", "u-ann", ticket_ids=ann["ticket_ids"][:2])
    assert ask("bob", 2)["outcome"] == "order"  # remembered: none left; on the shards: two
    assert ask("cat", 1)["error"]["code"] == "sold_out"
    allocator.stop()


def test_requests_answered_before_are_found_by_the_refused_create_and_answered_only_once(db):
    from boxoffice.services.releases import set_sale_status
    from boxoffice.store.admission_queue import Delivery

    event = create_event(db, name="Again", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=1),
                         price=100, currency="EUR", capacity=10, per_order_max=4, status=SaleStatus.DRAFT)
    allocator = EventAllocator(db, admission_queue(db.project), event.id, "again", lease_ttl_s=60)
    assert allocator._hold_lease()
    set_sale_status(db, event.id, SaleStatus.ON_SALE)
    batch = [TicketRequest(id=f"o_{n}", kind=RequestKind.PURCHASE, event_id=event.id, user_id=f"u-{n}", quantity=2,
                           idempotency_key="k", arrived_at=datetime.now(UTC)) for n in ("ann", "bob")]
    assert allocator._decide_and_commit([Delivery(r, f"ack-{r.id}") for r in batch]) == 2
    first = {s.id: s.to_dict() for s in db.collection("requests").where(
        filter=FieldFilter("event_id", "==", event.id)).stream()}

    # Delivered again, to a holder that does not remember answering them (as after a takeover):
    # the first commit is refused on the answers' create, the careful retry finds and skips them.
    allocator._answered_here.clear()
    late = TicketRequest(id="o_cat", kind=RequestKind.PURCHASE, event_id=event.id, user_id="u-cat", quantity=1,
                         idempotency_key="k", arrived_at=datetime.now(UTC))
    assert allocator._decide_and_commit([Delivery(r, f"ack2-{r.id}") for r in [*batch, late]]) == 1
    assert allocator.stats.commit_failures == 1 and allocator.stats.skipped == 2
    after = {s.id: s.to_dict() for s in db.collection("requests").where(
        filter=FieldFilter("event_id", "==", event.id)).stream()}
    assert {k: after[k] for k in first} == first and after["o_cat"]["outcome"] == "order"
    # Remembered by this holder: asked again, skipped without a read or a refused commit.
    assert allocator._decide_and_commit([Delivery(late, "ack3")]) == 0
    assert allocator.stats.commit_failures == 1 and allocator.stats.skipped == 3
    sold = sum(s.to_dict()["sold"] for s in db.collection("events").document(event.id).collection("inventory").stream())
    assert sold == 5
    allocator.stop()
