"""The pipeline's capacity on a backlog, with one worker and with two: the figures `simulate
--pipeline` sets beside the emulator's raw consume rate.

Why a backlog: during a sale the subscribers keep up, so messages handled per second over the
sale is the rate buyers create them, not what the pipeline can do. So, in the same run, after the
sale: a fresh event gets as many orders and cancellations as the sale had (the same message mix),
the email and analytics subscribers are started as parts of ``workers`` workers (OS processes
under the supervisor, as `boxoffice worker` runs them) and, once every part is up, the whole
backlog is published at once. Capacity = messages / (first -> last processed record); beside it,
how busy the machine was in that window and which processes took the CPU (``loadtest/cpu.py``:
on 2 cores this is what bounds the phase). Each phase's effects are audited like the sale's (one
distinct email per message, analytics equal to the orders, nothing unpublished, no dead letter).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.loadtest import cpu
from boxoffice.loadtest.pipeline_checks import audit_pipeline
from boxoffice.messaging.backlog import drain
from boxoffice.messaging.relay import sweep
from boxoffice.messaging.topology import Topology, publisher_client
from boxoffice.runtime.mailbox import Mailbox
from boxoffice.runtime.root import ANALYTICS_LOOP, EMAIL_LOOP
from boxoffice.services.cancellations import cancel_order
from boxoffice.services.events import create_event
from boxoffice.services.purchasing import purchase_tickets
from boxoffice.store.messaging import PROCESSED

READY_S = 120.0
BUYER_THREADS = 32


@dataclass(frozen=True)
class Capacity:
    workers: int
    messages: int
    handling_s: float
    handled_per_s: float
    drained: bool
    ready_s: float  # the workers' start-up (not timed)
    problems: list[str] = field(default_factory=list)
    cpu: dict[str, Any] | None = None  # the machine's CPU, first -> last processed record (loadtest/cpu.py)

    def as_dict(self) -> dict[str, Any]:
        return {"workers": self.workers, "messages": self.messages, "handling_s": round(self.handling_s, 3),
                "handled_per_s": round(self.handled_per_s, 1), "drained": self.drained,
                "ready_s": round(self.ready_s, 1), "problems": self.problems, "cpu": self.cpu}


def make_backlog(db: firestore.Client, users: list[str], orders: int, cancellations: int, tag: str) -> str:
    """A fresh event with ``orders`` one-ticket orders, the first ``cancellations`` cancelled.
    Nothing is published (no relay runs). Returns the event id."""
    event = create_event(db, name=f"Capacity {tag}", venue="Bench", price=1000, currency="EUR",
                         starts_at=datetime.now(UTC) + timedelta(days=30), capacity=max(1, orders),
                         per_order_max=1)
    with ThreadPoolExecutor(BUYER_THREADS) as pool:
        bought = list(pool.map(lambda u: purchase_tickets(db, event.id, u, 1, f"cap-{tag}").order, users[:orders]))
        list(pool.map(lambda o: cancel_order(db, o.id, o.user_id), bought[:cancellations]))
    return event.id


def measure_capacity(db: firestore.Client, topology: Topology, mailbox: Mailbox, env: dict[str, str], *,
                     workers: int, users: list[str], orders: int, cancellations: int,
                     state_dir: Any, drain_timeout_s: float = 600.0) -> Capacity:
    """One backlog phase (see the module docstring) with ``workers`` workers side by side."""
    from boxoffice.runtime.supervisor import Supervisor

    tag = f"{topology.suffix.lstrip('.')}-{workers}w"
    event_id = make_backlog(db, users, orders, cancellations, tag)
    t0 = time.monotonic()
    sups = [Supervisor([EMAIL_LOOP, ANALYTICS_LOOP], state_dir=state_dir, worker_id=f"cap-{tag}-{i}",
                       env=dict(os.environ, **env)).start() for i in range(workers)]
    try:
        ready = all(s.wait_ready(READY_S) for s in sups)
        ready_s = time.monotonic() - t0
        publisher = publisher_client(batch_max_messages=500)
        with cpu.Recorder() as recorder:
            while sweep(db, publisher, topology, limit=500).full:
                pass
            # Every poll of the drain is ~10 count queries, each a scan on the emulator: seldom, so
            # that measuring takes little CPU from what is measured (the figure comes from the records).
            report = drain(db, topology, timeout_s=drain_timeout_s, poll_s=2.0, event_id=event_id)
    finally:
        for s in sups:
            s.stop()
    problems = audit_pipeline(db, event_id, mailbox, topology=topology)
    if not ready:
        problems.insert(0, f"capacity phase: the workers' parts were not all up within {READY_S:.0f} s")
    if not report.drained:
        problems.insert(0, f"capacity phase not drained: {report}")
    stamps = [s.get("processed_at") for s in
              db.collection(PROCESSED).where(filter=FieldFilter("event_id", "==", event_id)).stream()]
    stamps = [t for t in stamps if isinstance(t, datetime)]
    span = (max(stamps) - min(stamps)).total_seconds() if len(stamps) > 1 else 0.0
    # The machine's CPU from the first message handled to the last (the capacity's own window).
    spent = recorder.between(min(stamps).timestamp(), max(stamps).timestamp()) if stamps else None
    return Capacity(workers, len(stamps), span, len(stamps) / span if span > 0 else 0.0, report.drained, ready_s,
                    problems, spent)
