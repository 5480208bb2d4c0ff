"""Several outbox relays at once, each in its own OS process, against the real emulators: per-event
order holds, nothing is lost when one relay is SIGKILLed mid-sale, and the partitions are shared."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.messaging.backlog import unpublished_count
from boxoffice.messaging.relay_leases import partition_of
from boxoffice.messaging.subscribers import Subscription
from boxoffice.messaging.topology import SubscriptionSpec, Topology, delete_topology, ensure_topology, publisher_client
from boxoffice.runtime.messaging_runner import subscriber_for
from boxoffice.runtime.worker import wait_until
from boxoffice.services.events import create_event
from boxoffice.services.purchasing import purchase_tickets
from boxoffice.store.documents import OUTBOX

RELAY_PROCESS = """
import logging, signal, sys, threading
logging.basicConfig(level=logging.WARNING)
from google.cloud import firestore
from boxoffice.messaging.relay import OutboxRelay, RelaySettings
from boxoffice.messaging.relay_leases import LeaseSettings
from boxoffice.messaging.topology import Topology
project, suffix, relay_id = sys.argv[1:4]
topology = Topology(project, suffix)
# A lease outlives a stall of several seconds (CI shares the machine): a relay that SIGKILL ends
# is taken over ttl_s later, well inside the test's wait.
settings = RelaySettings(leases=LeaseSettings(partitions=8, ttl_s=10.0, renew_s=0.5, margin_s=3.0))
relay = OutboxRelay(firestore.Client(project=project), topology, settings=settings, relay_id=relay_id).start()
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
done.wait()
relay.stop()
"""


def _relay(project: str, suffix: str, relay_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", RELAY_PROCESS, project, suffix, relay_id], env=os.environ.copy())


@pytest.fixture
def ordered(stack):
    spec = SubscriptionSpec("timeline", ("order.confirmed",), ordered=True, ack_deadline_s=10,
                            min_backoff_s=0.1, max_backoff_s=0.5)
    topo = Topology(stack.project, f".r{uuid.uuid4().hex[:8]}", (spec,))
    ensure_topology(topo)
    yield topo
    delete_topology(topo)


def test_two_relay_processes_keep_per_event_order_and_lose_nothing_when_one_is_killed(db, ordered, stack):
    events = [create_event(db, name=f"Gig {i}", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=30),
                           price=1000, currency="EUR", capacity=200, per_order_max=2).id for i in range(12)]
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def recording(d):
        with lock:
            seen.append((d.event_id, d.message_id))
        return "recorded"

    spec = ordered.spec("timeline")
    consumer = subscriber_for(Subscription(db, ordered, spec, recording, publisher_client()), threads=8)
    consumer.start()
    relays = {name: _relay(stack.project, ordered.suffix, name) for name in ("relay-a", "relay-b")}

    def leases() -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for snap in db.collection("relay_leases").stream():
            if snap.id.startswith(ordered.topic_id()):
                out[str(snap.get("holder"))].append(int(snap.get("partition")))
        return dict(out)

    try:
        # Shares settled: four partitions each (a relay claims up to ceil(partitions / live relays)).
        assert wait_until(lambda: sorted(map(len, leases().values())) == [4, 4] and set(leases()) == set(relays),
                          timeout_s=60), leases()
        at_start = leases()
        def buy(i: int) -> None:
            event = events[i % len(events)]
            purchase_tickets(db, event, f"u{i:03d}", 1, f"k{i}")

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(buy, range(90)))
            assert wait_until(lambda: unpublished_count(db) == 0, timeout_s=60)
            first_half: dict[str, int] = defaultdict(int)
            for snap in db.collection(OUTBOX).stream():
                first_half[str(snap.get("published_by"))] += 1
            marked_before_the_kill = {snap.id for snap in db.collection(OUTBOX).stream()}
            assert set(first_half) == set(relays), (first_half, "leases at the start", at_start, "now", leases(),
                                                    "partitions of the events", sorted({partition_of(e, 8) for e in events}))
            relays["relay-a"].send_signal(signal.SIGKILL)  # mid-sale, leases still held
            relays["relay-a"].wait(10)
            list(pool.map(buy, range(90, 180)))
        assert wait_until(lambda: unpublished_count(db) == 0, timeout_s=90), "relay-b did not take over"
        outbox = [(s.id, s.to_dict()) for s in db.collection(OUTBOX).stream()]
        assert wait_until(lambda: len({m for _, m in seen}) >= len(outbox), timeout_s=60)
    finally:
        consumer.stop()
        for proc in relays.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(15)

    by_relay: dict[str, int] = defaultdict(int)
    commit_order: dict[str, list[str]] = defaultdict(list)
    for mid, doc in sorted(outbox, key=lambda item: (item[1]["created_at"], item[0])):
        commit_order[doc["event_id"]].append(mid)
        by_relay[doc["published_by"]] += 1
    first_seen: dict[str, list[str]] = defaultdict(list)
    for event_id, mid in seen:
        if mid not in first_seen[event_id]:
            first_seen[event_id].append(mid)
    assert len(outbox) == 180
    assert dict(first_seen) == dict(commit_order)  # every message, each event's in commit order
    assert set(by_relay) == {"relay-a", "relay-b"}, by_relay
    # Taking relay-a's partitions over, relay-b publishes none of what relay-a had published and
    # marked (it once kept such messages from its own earlier polls and published them again).
    again = sorted(mid for mid, doc in outbox if mid in marked_before_the_kill and doc.get("publish_attempts") != 1)
    assert again == [], again
    unmarked = list(db.collection(OUTBOX).where(filter=FieldFilter("published_at", "==", None)).stream())
    assert unmarked == []
