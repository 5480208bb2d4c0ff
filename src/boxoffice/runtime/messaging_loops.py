"""The messaging loops of `boxoffice worker`: the outbox relay, the email and analytics
subscribers and the outbox repair (messaging/repair.py), registered with runtime/worker.py (which imports this module when present).

Each loop is built from the environment the worker runs in:
- Pub/Sub: PUBSUB_EMULATOR_HOST, else the emulator `boxoffice dev up` recorded; the topology is
  created if missing. ``BOXOFFICE_TOPOLOGY_SUFFIX`` selects a topology of its own (tests,
  side-by-side runs: see topology.Topology.suffix);
- SMTP (email only): BOXOFFICE_SMTP_HOST, else the dev stack's SMTP server.
A loop whose dependency is missing is not an error: it is replaced by a ``SkippedLoop`` that
says why, so `boxoffice worker` on a Firestore-only stack still runs the inventory loops.
Against real Pub/Sub (no emulator), production runs these as Cloud Functions
(messaging/cloud_functions.py), so the local worker skips them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from boxoffice.log import kv
from boxoffice.messaging.topology import ANALYTICS, EMAIL, Topology
from boxoffice.runtime.worker import PeriodicLoop, register_loop

log = logging.getLogger(__name__)

TOPOLOGY_SUFFIX_ENV = "BOXOFFICE_TOPOLOGY_SUFFIX"
RELAY, EMAIL_LOOP, ANALYTICS_LOOP = "outbox-relay", f"subscriber-{EMAIL}", f"subscriber-{ANALYTICS}"
REPAIR = "outbox-repair"
REPAIR_INTERVAL_ENV, REPAIR_GRACE_ENV = "BOXOFFICE_REPAIR_INTERVAL_S", "BOXOFFICE_REPAIR_GRACE_S"


class SkippedLoop:
    """Stands in for a loop that cannot run here; ``status()`` says why."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def start(self) -> None:
        kv(log, logging.WARNING, "worker.loop_skipped", loop=self.name, reason=self.reason)

    def stop(self, timeout: float = 5.0) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"alive": False, "skipped": self.reason}


def worker_topology() -> Topology | None:
    """The dev topology (created if missing), or None when no Pub/Sub emulator is known."""
    from boxoffice.runtime.devstack import use_recorded_pubsub
    from boxoffice.messaging.topology import default_topology, ensure_topology

    if not use_recorded_pubsub():
        return None
    topology = default_topology(suffix=os.environ.get(TOPOLOGY_SUFFIX_ENV, ""))
    ensure_topology(topology)
    return topology


_NO_PUBSUB = "no Pub/Sub emulator: set PUBSUB_EMULATOR_HOST or run `boxoffice dev up`"


def relay_loop(db: Any) -> Any:
    from boxoffice.messaging.relay import OutboxRelay

    topology = worker_topology()
    return OutboxRelay(db, topology) if topology else SkippedLoop(RELAY, _NO_PUBSUB)


def email_loop(db: Any) -> Any:
    from boxoffice.messaging import email
    from boxoffice.runtime import devstack
    from boxoffice.runtime.messaging_runner import SubscriberSettings, build_loops

    topology = worker_topology()
    if topology is None:
        return SkippedLoop(EMAIL_LOOP, _NO_PUBSUB)
    address = devstack.smtp_address()
    if not address:
        return SkippedLoop(EMAIL_LOOP, "no SMTP server: set BOXOFFICE_SMTP_HOST=host:port or run `boxoffice dev up`")
    settings = SubscriberSettings.from_env()
    mailer = email.Mailer(email.SmtpSettings.from_env(address), settings.smtp_connections)
    return build_loops(db, topology, mailer, relay=False, subscriptions=(EMAIL,), settings=settings).subscribers[0]


def analytics_loop(db: Any) -> Any:
    from boxoffice.runtime.messaging_runner import SubscriberSettings, build_loops

    topology = worker_topology()
    if topology is None:
        return SkippedLoop(ANALYTICS_LOOP, _NO_PUBSUB)
    return build_loops(db, topology, mailer=None, relay=False, subscriptions=(ANALYTICS,),
                       settings=SubscriberSettings.from_env()).subscribers[0]


def repair_loop(db: Any) -> Any:
    """Re-publishes messages whose effects are missing (messaging/repair.py). Needs Firestore
    only: the relay does the publishing."""
    from boxoffice.messaging.repair import DEFAULT_GRACE_S, repair
    from boxoffice.messaging.topology import default_topology

    topology = default_topology(suffix=os.environ.get(TOPOLOGY_SUFFIX_ENV, ""))
    grace_s = float(os.environ.get(REPAIR_GRACE_ENV, DEFAULT_GRACE_S))
    return PeriodicLoop(REPAIR, lambda: repair(db, topology, grace_s=grace_s).as_dict(),
                        float(os.environ.get(REPAIR_INTERVAL_ENV, "30")))


register_loop(RELAY, relay_loop)
register_loop(EMAIL_LOOP, email_loop)
register_loop(ANALYTICS_LOOP, analytics_loop)
register_loop(REPAIR, repair_loop)
