"""The inventory trigger: handler, retries and dead letters, and the worker, on the emulator."""

from __future__ import annotations

import itertools
import random
import threading
from datetime import UTC, datetime, timedelta

import pytest

from boxoffice.retry import Backoff
from boxoffice.runtime.inventory_loop import InventoryTriggerLoop
from boxoffice.runtime.worker import wait_until
from boxoffice.services.audit import audit_inventory
from boxoffice.services.cancellations import cancel_order
from boxoffice.services.events import create_event
from boxoffice.services.holds import hold_tickets, release_expired_holds
from boxoffice.services.purchasing import purchase_tickets
from boxoffice.services.summary import REFLECTED, WRITTEN
from boxoffice.store.documents import event_ref, shard_ref
from boxoffice.triggers.inventory import (
    InventoryChange,
    deliver,
    handle_inventory_change,
    list_failures,
    reconcile_event,
)

FAST = Backoff(base_s=0.01, cap_s=0.02)


def make_event(db, capacity=20, shards=4, **kw):
    return create_event(db, name="Gig", venue="Hall", starts_at=datetime(2030, 1, 1, tzinfo=UTC), price=1500,
                        currency="EUR", capacity=capacity, shard_count=shards, low_stock_threshold=2, **kw)


def summary(db, event_id):
    return event_ref(db, event_id).get().to_dict()["summary"]


def writes(db, event_id):
    return event_ref(db, event_id).get().to_dict().get("summary_writes", 0)


def change_of(db, event_id, sid, before):
    snap = shard_ref(db, event_id, sid).get()
    return InventoryChange(event_id=event_id, shard_id=sid, before=before, after=snap.to_dict(),
                           change_id=f"{event_id}.{sid}.{snap.update_time.timestamp()}", change_time=snap.update_time)


def shard_doc(db, event_id, sid):
    return shard_ref(db, event_id, sid).get().to_dict()


def sold_out_notices(db):
    return [s.id for s in db.collection("outbox").stream() if s.get("type") == "inventory.sold_out"]


def test_duplicate_and_out_of_order_changes_apply_once(db):
    event = make_event(db, capacity=2, shards=2)
    before0 = shard_doc(db, event.id, "s000")
    shard_ref(db, event.id, "s000").update({"available": 0, "sold": 1})
    first = change_of(db, event.id, "s000", before0)
    before1 = shard_doc(db, event.id, "s001")
    shard_ref(db, event.id, "s001").update({"available": 0, "sold": 1})
    second = change_of(db, event.id, "s001", before1)

    # the later change arrives first: the summary reflects both
    out = handle_inventory_change(db, event.id, "s001", second.before, second.after,
                                  change_id=second.change_id, change_time=second.change_time, min_interval_s=0)
    assert out.result == WRITTEN and summary(db, event.id)["sold"] == 2
    for late in (first, second, first):  # the earlier change late, and duplicates
        again = handle_inventory_change(db, event.id, late.shard_id, late.before, late.after,
                                        change_id=late.change_id, change_time=late.change_time, min_interval_s=0)
        assert again.result == REFLECTED
    assert writes(db, event.id) == 1
    assert summary(db, event.id)["state"] == "sold_out" and len(sold_out_notices(db)) == 1
    # a write that changes no count is ignored
    assert handle_inventory_change(db, event.id, "s001", second.after, second.after, change_id="x").result == "no_change"


def test_handler_failing_twice_then_succeeding_applies_once(db):
    event = make_event(db, capacity=1, shards=1)
    before = shard_doc(db, event.id, "s000")
    purchase_tickets(db, event.id, "ann", 1, "k")
    change = change_of(db, event.id, "s000", before)
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            raise ConnectionError("network blip")
        return handle_inventory_change(*args, **kwargs)

    out = deliver(db, change, handler=flaky, attempts=5, backoff=FAST, wait=False, min_interval_s=0)
    assert out is not None and out.result == WRITTEN and len(calls) == 3
    again = deliver(db, change, handler=flaky, attempts=5, backoff=FAST, wait=False, min_interval_s=0)
    assert again.result == REFLECTED
    assert writes(db, event.id) == 1 and len(sold_out_notices(db)) == 1
    assert list_failures(db) == []


def test_a_change_failing_every_attempt_is_dead_lettered_and_reconcile_repairs_it(db):
    event = make_event(db, capacity=5, shards=1)
    before = shard_doc(db, event.id, "s000")
    purchase_tickets(db, event.id, "ann", 2, "k")
    change = change_of(db, event.id, "s000", before)

    def broken(*args, **kwargs):
        raise RuntimeError("handler bug")

    assert deliver(db, change, handler=broken, attempts=3, backoff=FAST) is None
    [failure] = list_failures(db)
    assert failure["change_id"] == change.change_id and "handler bug" in failure["error"] and failure["attempts"] == 3
    assert summary(db, event.id)["sold"] == 0  # missed
    reconcile_event(db, event.id)
    assert summary(db, event.id)["sold"] == 2 and list_failures(db) == []
    assert len(list_failures(db, include_resolved=True)) == 1
    assert audit_inventory(db, event.id) == []


def test_concurrent_invocations_write_the_event_document_at_most_once_a_second(db):
    """Cloud Function style: every change is its own invocation waiting out the interval."""
    event = make_event(db, capacity=40, shards=8, per_order_max=1, per_user_limit=1)
    results = []

    def buy_and_trigger(i):
        before = None
        result = purchase_tickets(db, event.id, f"u{i}", 1, "k")
        sid = next(iter(result.order.allocations))
        ch = change_of(db, event.id, sid, before)
        results.append(handle_inventory_change(db, event.id, sid, None, ch.after, change_id=ch.change_id,
                                               change_time=ch.change_time, min_interval_s=1.0))

    threads = [threading.Thread(target=buy_and_trigger, args=(i,)) for i in range(30)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(results) == 30
    write_times = sorted({r.write_time for r in results if r.result == WRITTEN})
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(write_times)]
    assert all(g >= 0.999 for g in gaps), gaps
    assert writes(db, event.id) == len(write_times) <= 30
    assert summary(db, event.id)["sold"] == 30 and audit_inventory(db, event.id) == []


def test_purchase_cancellation_and_expired_hold_show_up_in_the_summary_through_the_worker(db):
    event = make_event(db)
    loop = InventoryTriggerLoop(db, backoff=FAST)
    loop.start()
    try:
        order = purchase_tickets(db, event.id, "ann", 3, "k").order
        assert wait_until(lambda: summary(db, event.id)["sold"] == 3, 10)
        cancel_order(db, order.id, "ann", ticket_ids=[order.ticket_ids[0]])
        assert wait_until(lambda: summary(db, event.id)["sold"] == 2, 10)
        hold_tickets(db, event.id, "bob", 4, "k", ttl_s=1)
        assert wait_until(lambda: summary(db, event.id)["held"] == 4, 10)
        assert release_expired_holds(db, now=datetime.now(UTC) + timedelta(seconds=2)) == 1
        assert wait_until(lambda: summary(db, event.id)["held"] == 0 and summary(db, event.id)["available"] == 18, 10)
        assert wait_until(loop.idle, 10)
        stats = loop.stats()
        assert stats["summary_writes_max_in_1s"] <= 1 and stats["lag_p50_s"] is not None
        assert stats["lag_max_s"] < 5
        assert audit_inventory(db, event.id) == []
    finally:
        loop.stop()


def test_worker_stopped_while_sales_go_on_converges_when_started_again(db):
    event = make_event(db, capacity=60, shards=6, per_order_max=2, per_user_limit=2)
    loop = InventoryTriggerLoop(db, backoff=FAST)
    loop.start()
    purchase_tickets(db, event.id, "first", 2, "k")
    assert wait_until(lambda: summary(db, event.id)["sold"] == 2, 10)
    loop.stop()
    rng = random.Random(7)
    orders = [purchase_tickets(db, event.id, f"u{i}", rng.choice([1, 2]), "k").order for i in range(15)]
    for o in orders[:5]:
        cancel_order(db, o.id, o.user_id)
    hold_tickets(db, event.id, "holder", 2, "k")
    assert audit_inventory(db, event.id) != []  # the summary lags while the worker is down
    restarted = InventoryTriggerLoop(db, backoff=FAST)
    restarted.start()
    try:
        assert wait_until(lambda: audit_inventory(db, event.id) == [], 15)
    finally:
        restarted.stop()


def test_a_small_mixed_sale_with_the_worker_stays_consistent(db):
    """Purchases, holds (some confirmed, some left to expire), cancellations and a sweeper at once."""
    from concurrent.futures import ThreadPoolExecutor

    from boxoffice.domain.errors import BoxofficeError
    from boxoffice.services.holds import confirm_hold

    event = make_event(db, capacity=60, shards=6, per_order_max=2, per_user_limit=2)
    loop = InventoryTriggerLoop(db, backoff=FAST)
    loop.start()

    def buyer(i):
        rng = random.Random(i)
        try:
            if rng.random() < 0.4:
                hold = hold_tickets(db, event.id, f"u{i}", rng.choice([1, 2]), "h", ttl_s=1.5)
                if rng.random() < 0.5:
                    confirm_hold(db, hold.id, f"u{i}")
            else:
                order = purchase_tickets(db, event.id, f"u{i}", rng.choice([1, 2]), "p").order
                if rng.random() < 0.3:
                    cancel_order(db, order.id, f"u{i}")
        except BoxofficeError:
            pass  # sold out, or a hold that expired before its confirm
        release_expired_holds(db)

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(buyer, range(80)))
        release_expired_holds(db, now=datetime.now(UTC) + timedelta(seconds=5))
        assert wait_until(lambda: audit_inventory(db, event.id) == [], 15), audit_inventory(db, event.id)
        stats = loop.stats()
        assert stats["summary_writes_max_in_1s"] <= 1 and (stats["summary_min_gap_s"] or 1.0) >= 0.999
    finally:
        loop.stop()


def test_a_listener_that_stops_hearing_makes_the_trigger_report_itself_dead(db, monkeypatch):
    # After a network partition a Firestore listener can stay "active" and deliver nothing
    # more; the trigger's probe (a document its own listener should hear) catches that, and the
    # part's process then exits for the supervisor to restart it.
    import boxoffice.runtime.inventory_loop as inventory_loop

    monkeypatch.setattr(inventory_loop, "LISTENER_PROBE_S", 0.5)
    healthy, deaf = InventoryTriggerLoop(db, listen=True), InventoryTriggerLoop(db, listen=True)
    deaf._probe_ref = db.collection("ops").document("heard-by-no-listener")
    for loop in (healthy, deaf):
        loop.start()
    try:
        assert wait_until(lambda: not deaf.status()["alive"], 15)
        assert healthy.status()["alive"] and healthy._probe_seen >= 1
    finally:
        for loop in (healthy, deaf):
            loop.stop()


def _burst_then_silence(db, event, n):
    """n purchases as fast as possible, then nothing: the burst's last change lands inside the
    coalescing interval of an earlier write, so only a scheduled trailing update can show it."""
    for i in range(n):
        purchase_tickets(db, event.id, f"b{i}", 1, "k")
    return max(s.update_time for s in db.collection("events").document(event.id).collection("inventory").stream())


@pytest.mark.parametrize("listen", [False, True], ids=["polling", "listener"])
def test_the_last_change_of_a_burst_is_written_later_with_nothing_else_happening(db, listen):
    # Polling: no rescan during the test, so the changed_at query alone must find the last change.
    event = make_event(db, capacity=40, shards=4, per_order_max=1, per_user_limit=1)
    loop = InventoryTriggerLoop(db, backoff=FAST, min_interval_s=1.0, listen=listen, rescan_s=3600)
    loop.start()
    try:
        assert wait_until(loop.initial_snapshot.is_set, 10)
        last_change = _burst_then_silence(db, event, 12)
        assert wait_until(lambda: summary(db, event.id)["sold"] == 12, 20)
        doc = summary(db, event.id)
        stats = loop.stats()
    finally:
        loop.stop()
    assert doc["as_of"] >= last_change
    assert writes(db, event.id) >= 2  # the first write came during the burst, the trailing one after it
    assert stats["summary_writes_max_in_1s"] <= 1


def test_a_trailing_change_whose_delivery_fails_every_attempt_is_retried_until_written(db):
    """The dead letter is recorded, and the worker keeps the change: the summary still converges
    with no further shard change, and the dead letter is marked resolved."""
    event = make_event(db, capacity=40, shards=4, per_order_max=1, per_user_limit=1)
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if 2 <= calls["n"] <= 4:  # after the first write: every attempt of the next delivery fails
            raise RuntimeError("firestore hiccup")
        return handle_inventory_change(*args, **kwargs)

    loop = InventoryTriggerLoop(db, backoff=FAST, min_interval_s=1.0, handler=flaky, attempts=3, retry_dead_s=0.5,
                                threads=1)
    loop.start()
    try:
        assert wait_until(loop.initial_snapshot.is_set, 10)
        purchase_tickets(db, event.id, "first", 1, "k")
        assert wait_until(lambda: summary(db, event.id)["sold"] == 1, 10)
        purchase_tickets(db, event.id, "second", 1, "k")
        assert wait_until(lambda: summary(db, event.id)["sold"] == 2, 20)
        assert wait_until(lambda: list_failures(db) == [], 10)
    finally:
        loop.stop()
    assert loop.dead_letters == 1
    assert list_failures(db, include_resolved=True)[0]["resolved"] is True


def test_many_events_are_summarised_side_by_side_not_one_after_another(db):
    """A handler that takes 1 s per call: eight events changed at once are all reflected in about
    one handler time with the default threads, where one thread would need eight."""
    import time as _time

    events = [make_event(db, capacity=10, shards=2, per_order_max=1, per_user_limit=1) for _ in range(8)]

    def slow(*args, **kwargs):
        _time.sleep(1.0)
        return handle_inventory_change(*args, **kwargs)

    loop = InventoryTriggerLoop(db, backoff=FAST, handler=slow)
    loop.start()
    try:
        assert wait_until(loop.initial_snapshot.is_set, 10)
        assert wait_until(loop.idle, 60)  # the initial snapshot's summaries
        for i, event in enumerate(events):
            purchase_tickets(db, event.id, f"u{i}", 1, "k")
        assert wait_until(lambda: all(summary(db, e.id)["sold"] == 1 for e in events), 30)
        in_flight_at_once = loop.max_inflight
    finally:
        loop.stop()
    assert in_flight_at_once >= 4


def test_polling_writes_the_trailing_cancellation_and_expiry_without_a_rescan(db):
    """Purchases and a hold go through the allocator, which writes the summary itself; once that
    is settled, a burst of cancellations and an expired hold (shard writes of the services, seen
    by the trigger alone) land inside one coalescing interval. The last of them is found by the
    poller's changed_at query alone (the full rescan never runs after the start) and written."""
    event = make_event(db, capacity=40, shards=4, per_order_max=2, per_user_limit=2)
    loop = InventoryTriggerLoop(db, backoff=FAST, min_interval_s=1.0, listen=False, rescan_s=3600)
    loop.start()
    try:
        assert wait_until(loop.initial_snapshot.is_set, 10)
        orders = [purchase_tickets(db, event.id, f"b{i}", 2, "k").order for i in range(6)]
        hold_tickets(db, event.id, "holder", 2, "k", ttl_s=1)
        assert wait_until(lambda: audit_inventory(db, event.id) == [] and loop.idle(), 20), audit_inventory(db, event.id)
        for order in orders[:3]:
            cancel_order(db, order.id, order.user_id)
        assert release_expired_holds(db, now=datetime.now(UTC) + timedelta(seconds=2)) == 1
        assert wait_until(lambda: audit_inventory(db, event.id) == [] and loop.idle(), 20), audit_inventory(db, event.id)
    finally:
        loop.stop()
    doc = summary(db, event.id)
    assert (doc["sold"], doc["held"], doc["available"]) == (6, 0, 34)
    assert loop.stats()["summary_writes_max_in_1s"] <= 1


def test_polling_finds_a_shard_write_without_changed_at_on_its_rescan(db):
    """A writer that does not stamp changed_at (an older build, a hand edit) is not missed: the
    periodic full read notices it."""
    event = make_event(db, capacity=10, shards=2)
    loop = InventoryTriggerLoop(db, backoff=FAST, listen=False, rescan_s=0.5)
    loop.start()
    try:
        assert wait_until(lambda: loop.initial_snapshot.is_set() and loop.idle(), 10)
        shard_ref(db, event.id, "s000").update({"available": 0, "sold": 5})  # no changed_at
        assert wait_until(lambda: summary(db, event.id)["sold"] == 5, 20)
    finally:
        loop.stop()
    assert summary(db, event.id)["available"] == 5


def test_a_refresh_within_its_lead_reads_at_once_and_commits_no_sooner_than_the_interval(db):
    from boxoffice.services.summary import DEFERRED, refresh_summary

    event = make_event(db)
    first = refresh_summary(db, event.id, force=True)
    assert first.result == WRITTEN and first.write_time is not None
    purchase_tickets(db, event.id, "u1", 2, "k1")
    changed = max(s.update_time for s in db.collection("events").document(event.id).collection("inventory").stream())
    # Outside the lead: deferred until the lead before the interval's end, nothing written.
    deferred = refresh_summary(db, event.id, change_time=changed, min_interval_s=30.0, lead_s=0.5)
    assert deferred.result == DEFERRED and 29.0 < deferred.wait_s + 0.5 <= 30.0
    # Within the lead: written, but not before the interval has passed by the server's clock.
    written = refresh_summary(db, event.id, change_time=changed, min_interval_s=3.0, lead_s=3.0)
    assert written.result == WRITTEN and written.write_time is not None
    # 3 s by design; the emulator has stamped a commit up to 0.3 s before it was sent (improvements.md)
    assert (written.write_time - first.write_time).total_seconds() >= 2.65
    assert summary(db, event.id)["sold"] == 2
