"""How far behind the pipeline is, counted from Firestore: ``backlog`` (unpublished outbox
messages and, per subscription, messages of its types not yet handled) and ``drain`` (wait until
both are zero). The emulator has no backlog metric, and a peek would disturb delivery.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.messaging.topology import Topology, default_topology
from boxoffice.store.documents import OUTBOX
from boxoffice.store.messaging import FAILURES, PROCESSED

Where = tuple[str, str, Any]


def count_docs(db: firestore.Client, collection: str, *where: Where) -> int:
    q: Any = db.collection(collection)
    for f, op, v in where:
        q = q.where(filter=FieldFilter(f, op, v))
    result = q.count().get()
    return int(result[0][0].value)


def unpublished_count(db: firestore.Client, event_id: str | None = None) -> int:
    """Outbox messages not yet published (of one event, or all)."""
    scope: tuple[Where, ...] = (("event_id", "==", event_id),) if event_id else ()
    return count_docs(db, OUTBOX, ("published_at", "==", None), *scope)


@dataclass(frozen=True)
class DrainReport:
    drained: bool
    waited_s: float
    unpublished: int
    backlog: dict[str, int]  # subscription -> messages it should have handled and has not yet

    def __str__(self) -> str:
        state = "drained" if self.drained else "NOT drained"
        return f"{state} after {self.waited_s:.1f} s: unpublished={self.unpublished} backlog={self.backlog}"


def backlog(db: firestore.Client, topology: Topology, event_id: str | None = None) -> tuple[int, dict[str, int]]:
    """(unpublished outbox messages, per subscription: messages of its types not yet handled),
    of the whole database or of one event.

    Handled = a processed-message record, or dead-lettered by that subscription. Counted from
    Firestore because the emulator has no backlog metric and a peek would disturb delivery."""
    scope: tuple[Where, ...] = (("event_id", "==", event_id),) if event_id else ()
    unpublished = unpublished_count(db, event_id)
    per_sub: dict[str, int] = {}
    for spec in topology.subscriptions:
        expected = sum(count_docs(db, OUTBOX, ("type", "==", t), *scope) for t in spec.types)
        done = count_docs(db, PROCESSED, ("subscription", "==", spec.name), *scope)
        dead = count_docs(db, FAILURES, ("subscription", "==", spec.name), ("dead_lettered", "==", True), *scope)
        per_sub[spec.name] = max(0, expected - done - dead)
    return unpublished, per_sub


def drain(db: firestore.Client, topology: Topology | None = None, *, timeout_s: float = 120.0,
          poll_s: float = 0.5, event_id: str | None = None) -> DrainReport:
    """Wait until the outbox has nothing unpublished and every subscription has handled every
    message of its types (the relay and subscribers must be running somewhere); with
    ``event_id``, only that event's messages count (other events' leftovers do not block)."""
    topology = topology or default_topology()
    t0 = time.monotonic()
    while True:
        unpublished, per_sub = backlog(db, topology, event_id)
        waited = time.monotonic() - t0
        if unpublished == 0 and not any(per_sub.values()):
            return DrainReport(True, waited, 0, per_sub)
        if waited >= timeout_s:
            return DrainReport(False, waited, unpublished, per_sub)
        time.sleep(poll_s)
