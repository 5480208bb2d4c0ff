"""Seats and pools contended by buyers in three OS processes who buy, hold, confirm, release and
cancel, while two allocator processes compete for the event's lease and the holder is SIGKILLed.

A seat given back (cancelled, released, expired) must sell again, never twice; afterwards the
audit (every quota, tickets per type, seat documents against valid tickets and live holds) is
clean, and the section documents clients listen to show exactly the seats taken.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud.firestore_v1.base_query import FieldFilter
from tests.integration.lease_crash import kill_the_lease_holder

from boxoffice.runtime.allocator import AllocatorProcesses
from boxoffice.services.audit import audit_inventory
from boxoffice.services.events import create_event
from boxoffice.services.holds import release_expired_holds

TYPES = {"types": [
    {"id": "stalls", "name": "Stalls", "price": 5000, "per_user_limit": 20},
    {"id": "early", "name": "Early bird", "price": 1000, "pool": "floor", "capacity": 4, "per_user_limit": 20},
    {"id": "standing", "name": "Standing", "price": 2000, "pool": "floor", "per_user_limit": 20},
], "pools": [{"id": "floor", "capacity": 8}]}
SEATS = {"sections": [{"id": s, "rows": [{"id": r, "first": 1, "last": 5, "type": "stalls"} for r in rows]}
                      for s, rows in (("front", "AB"), ("back", "CD"))]}
ALL_SEATS = [f"{s}:{r}:{n}" for s, rows in (("front", "AB"), ("back", "CD")) for r in rows for n in range(1, 6)]
BUYERS, INSTANCES, ROUNDS = 60, 3, 3


def _instance(env: dict[str, str], event_id: str, users: list[str], seed: int, out: Any) -> None:
    os.environ.update(env)
    from boxoffice.domain.errors import BoxofficeError
    from boxoffice.runtime.emulators import client_from_environment
    from boxoffice.services.cancellations import cancel_order
    from boxoffice.services.holds import confirm_hold, hold_tickets, release_hold
    from boxoffice.services.purchasing import purchase_tickets

    db = client_from_environment()

    def play(user: str) -> dict[str, Any]:
        rng = random.Random(f"{seed}-{user}")
        done: dict[str, Any] = {"user": user, "bought": 0, "cancelled": 0, "held": 0, "refused": []}
        for n in range(ROUNDS):
            roll = rng.random()
            key = f"{user}-{n}"
            try:
                if roll < 0.35:  # two seats, best available, then maybe give one back
                    order = purchase_tickets(db, event_id, user, None, key, types={"stalls": 2}, deadline_s=90).order
                    done["bought"] += 1
                    if rng.random() < 0.8:
                        cancel_order(db, order.id, user, types={"stalls": rng.choice((1, 2))})
                        done["cancelled"] += 1
                elif roll < 0.6:  # a contested specific seat
                    seat = rng.choice(ALL_SEATS)
                    order = purchase_tickets(db, event_id, user, None, key, seats=[seat], deadline_s=90).order
                    done["bought"] += 1
                    if rng.random() < 0.6:
                        cancel_order(db, order.id, user)
                        done["cancelled"] += 1
                elif roll < 0.85:  # hold seats and standing, then confirm, release or let it expire
                    hold = hold_tickets(db, event_id, user, None, key, types={"stalls": 1, "early": 1},
                                        ttl_s=1.5, deadline_s=90)
                    done["held"] += 1
                    fate = rng.random()
                    if fate < 0.4:
                        confirm_hold(db, hold.id, user)
                    elif fate < 0.7:
                        release_hold(db, hold.id, user)
                else:
                    purchase_tickets(db, event_id, user, None, key, types={"standing": 1, "early": 1}, deadline_s=90)
                    done["bought"] += 1
            except BoxofficeError as exc:
                done["refused"].append(exc.code)
        return done

    with ThreadPoolExecutor(8) as pool:
        out.put(list(pool.map(play, users)))


def test_seats_given_back_sell_again_but_never_twice_across_processes_and_an_allocator_crash(db, stack, allocator):
    event = create_event(db, name="Contended", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=3),
                         per_order_max=4, per_user_limit=20, types=TYPES, seats=SEATS)
    standby = AllocatorProcesses(stack.firestore_host, stack.pubsub_host, stack.project, count=1).start()
    ours = set(standby.pids) | set(allocator.pids)
    killed: dict[str, Any] = {}
    running = threading.Event()
    running.set()

    def sweep() -> None:
        while running.is_set():
            release_expired_holds(db)
            time.sleep(0.5)

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    users = [f"u{i:03d}" for i in range(BUYERS)]
    procs = [ctx.Process(target=_instance, args=(dict(os.environ), event.id, users[i::INSTANCES], i, out))
             for i in range(INSTANCES)]
    threads = [threading.Thread(target=kill_the_lease_holder, args=(db, event.id, ours, BUYERS // 2, killed, running)),
               threading.Thread(target=sweep)]
    try:
        for p in procs:
            p.start()
        for t in threads:
            t.start()
        results = [r for _ in procs for r in out.get(timeout=400)]
    finally:
        running.clear()
        for t in threads:
            t.join()
        for p in procs:
            p.join(30)
    try:
        assert killed, "the run ended before the allocator could be killed"
        assert len(results) == BUYERS
        refusals = {c for r in results for c in r["refused"]}
        assert refusals <= {"seat_unavailable", "ticket_type_sold_out", "hold_expired"}, refusals
        assert sum(r["cancelled"] for r in results) >= 5 and sum(r["held"] for r in results) >= 3
        # Every hold ends (the sweeper expires what was neither confirmed nor released).
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            release_expired_holds(db)
            if not list(db.collection("holds").where(filter=FieldFilter("status", "==", "active")).limit(1).stream()):
                break
            time.sleep(0.5)
        assert audit_inventory(db, event.id, check_summary=False) == []
        tickets = [t.to_dict() for t in db.collection("tickets")
                   .where(filter=FieldFilter("event_id", "==", event.id)).stream()]
        valid = [t for t in tickets if t["status"] == "valid"]
        sold = [t["seat"] for t in valid if t.get("seat")]
        assert len(sold) == len(set(sold)), "a seat was sold twice"
        void_seats = {t.get("seat") for t in tickets if t["status"] == "void"}
        assert void_seats & set(sold), "no seat given back was sold again: the test proved nothing about reuse"
        seats = {s.id for s in db.collection("events").document(event.id).collection("seats").stream()}
        assert seats == set(sold)
        # The section documents catch up with the seat documents (free seats shown free), and the
        # allocator consumes every seat-release marker.
        sections = db.collection("events").document(event.id).collection("sections")
        releases = db.collection("events").document(event.id).collection("seat_releases")
        give_up = time.monotonic() + 20
        while time.monotonic() < give_up:
            shown = {t for s in sections.stream() for t in (s.to_dict() or {}).get("taken", ())}
            markers = [m.id for m in releases.stream()]
            if shown == seats and not markers:
                break
            time.sleep(0.5)
        assert shown == seats, f"sections show {sorted(shown ^ seats)} wrongly"
        assert markers == [], "the allocator left seat-release markers behind"
    finally:
        standby.stop()


def test_a_seated_simulation_with_holds_and_cancellations_audits_clean(db):
    from boxoffice.loadtest.simulator import SimulationConfig, run_simulation

    result = run_simulation(db, SimulationConfig(buyers=80, tickets=40, concurrency=40, seed=5, deadline_s=60,
                                                 seated=True, hold_share=0.3, confirm_share=0.5, cancel_share=0.3,
                                                 hold_ttl_s=1.0, allocators=0))
    report = result.report()
    assert report["errors"] == 0, report
    assert report["audit"]["ok"], report["audit"]["problems"]
    assert any(r.via_hold for r in result.results) and any(r.cancelled for r in result.results)
