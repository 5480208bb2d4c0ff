"""Section documents when no allocator decides the event: seats given back must still show free.

While an allocator holds an event's lease it writes the event's section documents; after the
sale closed (or its allocator died and none came back) a cancellation or a hold's end frees
seats, and ``services.sections`` rewrites their sections in the allocator's stead, fenced on the
lease document. These tests run the allocator and the hold sweeper as separate OS processes,
SIGKILL the allocator, and check that a stale rewrite can never overwrite an allocator's view.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from boxoffice.domain.model import ticket_seats_of
from boxoffice.services.audit import audit_inventory
from boxoffice.services.cancellations import cancel_order
from boxoffice.services.events import create_event
from boxoffice.services.holds import hold_tickets, release_hold
from boxoffice.services.purchasing import purchase_tickets
from boxoffice.services.releases import set_sale_status
from boxoffice.services.sections import commit_section_rewrite, plan_section_rewrite
from boxoffice.store.leases import lease_ref, read_idle_lease, release, try_acquire

TYPES = {"types": [{"id": "front", "name": "Front", "price": 5000}]}
SEATS = {"sections": [{"id": "front", "rows": [{"id": "A", "first": 1, "last": 10, "type": "front"}]}]}


def _event(db: Any) -> Any:
    return create_event(db, name="Seated", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=3),
                        per_order_max=4, types=TYPES, seats=SEATS)


def _buy(db: Any, event_id: str, user: str, seats: list[str]) -> Any:
    return purchase_tickets(db, event_id, user, None, f"k-{user}", deadline_s=60, seats=seats).order


def _section(db: Any, event_id: str) -> dict[str, Any]:
    snap = db.collection("events").document(event_id).collection("sections").document("front").get()
    return snap.to_dict() or {} if snap.exists else {}


def _markers(db: Any, event_id: str) -> list[str]:
    return [s.id for s in db.collection("events").document(event_id).collection("seat_releases").stream()]


def _until(what: str, check: Callable[[], bool], give_up_s: float = 60.0) -> None:
    give_up = time.monotonic() + give_up_s
    while time.monotonic() < give_up:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {give_up_s:.0f} s: {what}")


def _taken(db: Any, event_id: str) -> list[str]:
    return list(_section(db, event_id).get("taken", []))


def _kill_the_lease_holder(db: Any, event_id: str, ours: list[int]) -> None:
    pid = int(lease_ref(db, event_id).get().get("holder").rsplit("-", 2)[1])
    assert pid in ours  # only ever a process this session started
    os.kill(pid, signal.SIGKILL)


def _ticket_of(order: Any, seat: str) -> str:
    return next(t for t, s in ticket_seats_of(order).items() if s == seat)


def test_a_cancellation_after_the_sale_closed_shows_its_seats_free(db):
    event = _event(db)
    order = _buy(db, event.id, "ada", ["front:A:5", "front:A:6"])
    _until("the allocator shows the seats sold", lambda: _taken(db, event.id) == ["front:A:5", "front:A:6"])
    set_sale_status(db, event.id, "closed")
    _until("the allocator retired from the closed sale", lambda: read_idle_lease(db, event.id) is not None)

    cancel_order(db, order.id, "ada", ticket_ids=[_ticket_of(order, "front:A:5")])

    _until("the cancelled seat shows free", lambda: _taken(db, event.id) == ["front:A:6"])
    assert _section(db, event.id)["free"] == {"front": 9}
    assert _markers(db, event.id) == []
    assert audit_inventory(db, event.id, check_summary=False) == []


def test_seats_given_back_while_a_dead_allocator_held_the_lease_are_shown_free_by_the_sweeper(db, stack, allocator,
                                                                                             tmp_path):
    event = _event(db)
    order = _buy(db, event.id, "ada", ["front:A:5", "front:A:6"])
    hold = hold_tickets(db, event.id, "bob", None, "k-bob-hold", deadline_s=60, seats=["front:A:1"])
    _until("the allocator shows the seats taken",
           lambda: _taken(db, event.id) == ["front:A:1", "front:A:5", "front:A:6"])
    _kill_the_lease_holder(db, event.id, allocator.pids)
    set_sale_status(db, event.id, "closed")  # no allocator comes back for it
    # Releases while a dead allocator's lease is still live must leave the sections to it. Its
    # own lease may expire before they commit, so a stand-in holds one as long as the test needs.
    _until("the killed allocator's lease expired", lambda: read_idle_lease(db, event.id) is not None)
    stand_in = try_acquire(db, event.id, "dead-allocator-stand-in", ttl_s=120)
    assert stand_in is not None

    cancel_order(db, order.id, "ada", ticket_ids=[_ticket_of(order, "front:A:6")])
    release_hold(db, hold.id, "bob")
    assert len(_markers(db, event.id)) == 2  # left to the lease holder
    assert _taken(db, event.id) == ["front:A:1", "front:A:5", "front:A:6"]

    sweeper = subprocess.Popen(
        [sys.executable, "-m", "boxoffice.runtime.part_process", "hold-sweeper", "--dir", str(tmp_path / "sweeper")],
        env=dict(os.environ, BOXOFFICE_HOLD_SWEEP_S="0.5"), stdout=open(tmp_path / "sweeper.log", "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(1.5)  # a few sweeps while the lease is live: they must leave the sections alone
        assert sweeper.poll() is None, (tmp_path / "sweeper.log").read_text()
        assert _taken(db, event.id) == ["front:A:1", "front:A:5", "front:A:6"]
        release(db, stand_in)  # the lease ends (as the dead allocator's expires)
        _until("the sweeper shows the seats free", lambda: _taken(db, event.id) == ["front:A:5"])
    finally:
        sweeper.send_signal(signal.SIGTERM)
        sweeper.wait(30)
    assert _section(db, event.id)["free"] == {"front": 9}
    assert _markers(db, event.id) == []
    assert audit_inventory(db, event.id, check_summary=False) == []


def test_a_stale_rewrite_never_overwrites_the_sections_of_an_allocator_that_took_the_lease(db, allocator):
    event = _event(db)
    order = _buy(db, event.id, "ada", ["front:A:5"])
    _until("the allocator shows the seat sold", lambda: _taken(db, event.id) == ["front:A:5"])
    _kill_the_lease_holder(db, event.id, allocator.pids)
    _until("the killed allocator's lease expired", lambda: read_idle_lease(db, event.id) is not None)
    stand_in = try_acquire(db, event.id, "stand-in", ttl_s=120)
    assert stand_in is not None
    cancel_order(db, order.id, "ada")  # the lease is held: the marker waits
    release(db, stand_in)
    stale = plan_section_rewrite(db, event.id)
    assert stale is not None and stale.views["front"]["taken"] == [] and len(stale.markers) == 1

    # A new allocator process takes the lease, frees the seat in its book and sells it again.
    allocator.ensure_running()
    _buy(db, event.id, "bob", ["front:A:5"])
    _until("the new allocator shows the seat sold again", lambda: _taken(db, event.id) == ["front:A:5"])

    assert commit_section_rewrite(db, stale) is False  # fenced: the lease changed hands since
    assert _taken(db, event.id) == ["front:A:5"]
    assert _markers(db, event.id) == []
    assert audit_inventory(db, event.id, check_summary=False) == []
