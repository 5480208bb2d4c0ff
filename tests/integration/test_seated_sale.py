"""A seated sale with ticket types across OS processes, the allocator SIGKILLed mid-sale, audited.

Buyers in three processes ask for pairs of best-available seats, for specific (contested) seats
and for standing tickets; two allocator processes compete for the event's lease and the holder
is killed halfway. No seat may be sold twice, every buyer must get an answer, and the audit
(seat documents, tickets per seat and per type, every quota) must be clean.
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

from tests.integration.lease_crash import kill_the_lease_holder

from boxoffice.runtime.allocator import AllocatorProcesses
from boxoffice.services.audit import audit_inventory
from boxoffice.services.events import create_event

TYPES = {"types": [
    {"id": "front", "name": "Front", "price": 5000},
    {"id": "back", "name": "Back", "price": 3000},
    {"id": "standing", "name": "Standing", "price": 2000, "capacity": 20},
]}
SEATS = {"sections": [
    {"id": "front", "rows": [{"id": r, "first": 1, "last": 10, "type": "front"} for r in "AB"]},
    {"id": "back", "rows": [{"id": r, "first": 1, "last": 10, "type": "back"} for r in "CDE"]},
]}
BUYERS, INSTANCES = 150, 3


def plan(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    front = [f"front:{r}:{n}" for r in "AB" for n in range(1, 11)]
    out = []
    for i in range(BUYERS):
        roll = rng.random()
        if roll < 0.5:
            out.append({"types": {"back": 2}})
        elif roll < 0.8:
            out.append({"seats": rng.sample(front, rng.choice((1, 2)))})
        else:
            out.append({"types": {"standing": rng.randint(1, 3)}})
        out[-1]["user"] = f"buyer-{i:03d}"
    return out


def _instance(env: dict[str, str], event_id: str, items: list[dict[str, Any]], out: Any) -> None:
    os.environ.update(env)
    from boxoffice.domain.errors import BoxofficeError
    from boxoffice.runtime.emulators import client_from_environment
    from boxoffice.services.purchasing import purchase_tickets

    db = client_from_environment()

    def buy(item: dict[str, Any]) -> dict[str, Any]:
        try:
            result = purchase_tickets(db, event_id, item["user"], None, f"k-{item['user']}", deadline_s=90,
                                      types=item.get("types"), seats=item.get("seats"))
        except BoxofficeError as exc:
            return item | {"refused": exc.code}
        return item | {"lines": [(ln.type_id, ln.quantity, list(ln.seat_ids)) for ln in result.order.lines]}

    with ThreadPoolExecutor(10) as pool:
        out.put(list(pool.map(buy, items)))


def test_no_seat_is_sold_twice_across_processes_and_an_allocator_crash(db, stack, allocator):
    event = create_event(db, name="Seated", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=3),
                         per_order_max=4, types=TYPES, seats=SEATS)
    standby = AllocatorProcesses(stack.firestore_host, stack.pubsub_host, stack.project, count=1).start()
    ours = set(standby.pids) | set(allocator.pids)
    killed: dict[str, Any] = {}

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    items = plan(seed=13)
    procs = [ctx.Process(target=_instance, args=(dict(os.environ), event.id, items[i::INSTANCES], out))
             for i in range(INSTANCES)]
    killer = threading.Thread(target=kill_the_lease_holder, args=(db, event.id, ours, BUYERS // 3, killed))
    try:
        for p in procs:
            p.start()
        killer.start()
        results = [r for _ in procs for r in out.get(timeout=300)]
    finally:
        killer.join()
        for p in procs:
            p.join(30)
        standby.stop()
    assert killed, "the sale ended before the allocator could be killed"
    assert len(results) == BUYERS  # every buyer got an answer
    refusals = {r["refused"] for r in results if "refused" in r}
    assert refusals <= {"seat_unavailable", "ticket_type_sold_out"}, refusals

    sold = [s for r in results for _, _, seats in r.get("lines", ()) for s in seats]
    assert len(sold) == len(set(sold)), "a seat was sold twice"
    granted = [r for r in results if "lines" in r]
    for r in granted:
        if "seats" in r:  # specific seats: exactly those
            assert sorted(s for _, _, seats in r["lines"] for s in seats) == sorted(r["seats"])
    pairs = [seats for r in granted for t, _, seats in r["lines"] if t == "back"]
    assert len(pairs) == 15  # 30 back seats, all sold in pairs
    for a, b in pairs:  # rows of 10 seats and only pairs asked: every pair sits together
        (sa, ra, na), (sb, rb, nb) = a.split(":"), b.split(":")
        assert (sa, ra) == (sb, rb) and abs(int(na) - int(nb)) == 1, (a, b)
    standing = sum(n for r in granted for t, n, _ in r["lines"] if t == "standing")
    assert standing <= 20
    assert audit_inventory(db, event.id, check_summary=False) == []
    seat_docs = {s.id for s in db.collection("events").document(event.id).collection("seats").stream()}
    assert seat_docs == set(sold)
    # The section documents clients listen to catch up with the seats sold (written at most once
    # a second each, so allow the allocator a few idle turns).
    sections = db.collection("events").document(event.id).collection("sections")
    give_up = time.monotonic() + 20
    while time.monotonic() < give_up:
        views = {s.id: s.to_dict() for s in sections.stream()}
        if sorted(t for v in views.values() for t in v["taken"]) == sorted(sold):
            break
        time.sleep(0.5)
    shown = sorted(t for v in views.values() for t in v["taken"])
    assert shown == sorted(sold), f"section documents miss sold seats: {sorted(set(sold) - set(shown))}"
    assert views["back"]["free"] == {"back": 0} and all(t.startswith("back:") for t in views["back"]["taken"])
