"""The composition root: the one place that builds clients and the worker's parts.

Everything that runs boxoffice gets its clients from here and nowhere else: the CLI
(``firestore_client``), each part process of `boxoffice worker` (``build_part``), the messaging
commands (``local_topology``, ``smtp_settings``) and both Cloud Functions entry modules
(``cloud_firestore``, ``cloud_publisher``, ``cloud_topology``: one lazy client per function
instance). Nothing registers itself by being imported: ``PARTS`` names every part of the worker
and its factory, a plain function of a Firestore client.

Locally the clients come from the environment:
- Firestore: FIRESTORE_EMULATOR_HOST, else the stack `boxoffice dev up` recorded, else the real
  project GOOGLE_CLOUD_PROJECT;
- Pub/Sub: PUBSUB_EMULATOR_HOST, else the emulator `boxoffice dev up` recorded; the topology is
  created if missing. ``BOXOFFICE_TOPOLOGY_SUFFIX`` selects a topology of its own (tests,
  side-by-side runs: see topology.Topology.suffix);
- SMTP (email only): BOXOFFICE_SMTP_HOST (+ _USER, _PASSWORD, _STARTTLS), else the dev stack's
  SMTP server.
A part whose dependency is missing is not an error: it is replaced by a ``SkippedLoop`` that
says why, so `boxoffice worker` on a Firestore-only stack still runs the inventory parts.
Against real Pub/Sub (no emulator) production runs the messaging parts as Cloud Functions
(runtime/pipeline_functions.py), so the local worker skips them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from google.cloud import firestore

from boxoffice.log import kv
from boxoffice.messaging import email
from boxoffice.messaging.relay import OutboxRelay, RelaySettings
from boxoffice.messaging.repair import DEFAULT_GRACE_S, repair
from boxoffice.messaging.topology import (
    ANALYTICS,
    EMAIL,
    Topology,
    default_topology,
    ensure_topology,
    publisher_client,
)
from boxoffice.runtime import devstack
from boxoffice.runtime import emulators as em
from boxoffice.runtime.allocator import ALLOCATOR, allocator_from_settings
from boxoffice.runtime.inventory_loop import InventoryTriggerLoop
from boxoffice.runtime.messaging_runner import SubscriberSettings, build_loops
from boxoffice.runtime.worker import BackgroundLoop, PeriodicLoop, Worker
from boxoffice.services.holds import release_expired_holds
from boxoffice.services.sections import sweep_released_sections

log = logging.getLogger(__name__)

TOPOLOGY_SUFFIX_ENV = "BOXOFFICE_TOPOLOGY_SUFFIX"
INVENTORY_TRIGGER, HOLD_SWEEPER = "inventory-trigger", "hold-sweeper"
RELAY, EMAIL_LOOP, ANALYTICS_LOOP = "outbox-relay", f"subscriber-{EMAIL}", f"subscriber-{ANALYTICS}"
REPAIR = "outbox-repair"
REPAIR_INTERVAL_ENV, REPAIR_GRACE_ENV = "BOXOFFICE_REPAIR_INTERVAL_S", "BOXOFFICE_REPAIR_GRACE_S"
HOLD_SWEEP_ENV = "BOXOFFICE_HOLD_SWEEP_S"  # the simulator's holds live seconds, so it sweeps more often


# ---- clients --------------------------------------------------------------------------------


class NoFirestore(RuntimeError):
    """Neither an emulator nor a real project is configured."""


def firestore_client(*, require_target: bool = False) -> firestore.Client:
    """The Firestore client of the environment: FIRESTORE_EMULATOR_HOST, else the `dev up`
    stack, else the project GOOGLE_CLOUD_PROJECT (production). With ``require_target``, raises
    ``NoFirestore`` instead of guessing a project when none of these is set (the CLI)."""
    if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
        recorded = em.recorded_stack()
        if recorded is not None:
            devstack.use_recorded_pubsub()  # purchases and holds publish to the admission queue
            return em.firestore_client(recorded)
        if require_target and not os.environ.get("GOOGLE_CLOUD_PROJECT"):
            raise NoFirestore("No emulator found: run `boxoffice dev up` first (or set FIRESTORE_EMULATOR_HOST, "
                              "or GOOGLE_CLOUD_PROJECT to use a real project).")
    return firestore.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or "demo-boxoffice")


def local_topology(*, create: bool = True) -> Topology | None:
    """The local Pub/Sub topology (created if missing), or None when no Pub/Sub emulator is
    known. Points the Pub/Sub clients at the dev stack's emulator when the environment names none."""
    if not devstack.use_recorded_pubsub():
        return None
    topology = default_topology(suffix=os.environ.get(TOPOLOGY_SUFFIX_ENV, ""))
    if create:
        ensure_topology(topology)
    return topology


def smtp_settings() -> email.SmtpSettings | None:
    """BOXOFFICE_SMTP_* settings, else the dev stack's SMTP server; None when there is neither."""
    address = devstack.smtp_address()
    return email.SmtpSettings.from_env(address) if address else None


class CloudClients:
    """Cloud Functions: the clients of one function instance, each built on first use and
    then reused by every invocation the instance serves (the project of the runtime)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._db: firestore.Client | None = None
        self._publisher: Any = None
        self._mailer: email.Mailer | None = None

    def firestore(self) -> firestore.Client:
        with self._lock:
            if self._db is None:
                self._db = firestore.Client()
            return self._db

    def publisher(self) -> Any:
        """A Pub/Sub publisher with ordering keys."""
        with self._lock:
            if self._publisher is None:
                self._publisher = publisher_client()
            return self._publisher

    def mailer(self) -> email.Mailer:
        """The SMTP relay of BOXOFFICE_SMTP_HOST (+ _USER, _PASSWORD, _STARTTLS)."""
        with self._lock:
            if self._mailer is None:
                self._mailer = email.Mailer(email.SmtpSettings.from_env())
            return self._mailer

    def topology(self) -> Topology:
        return default_topology(os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT"),
                                emulator=False)

    def close(self) -> None:
        with self._lock:
            if self._mailer is not None:
                self._mailer.close()
            self._db = self._publisher = self._mailer = None


_cloud = CloudClients()


def cloud() -> CloudClients:
    """The clients of this Cloud Functions instance (shared by both entry modules)."""
    return _cloud


def reset_cloud() -> None:
    """Forget the instance's clients, as a cold start would (tests)."""
    _cloud.close()


# ---- the worker's parts ---------------------------------------------------------------------


class SkippedLoop:
    """Stands in for a part that cannot run here; ``status()`` says why."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def start(self) -> None:
        kv(log, logging.WARNING, "worker.loop_skipped", loop=self.name, reason=self.reason)

    def stop(self, timeout: float = 5.0) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"alive": False, "skipped": self.reason}


_NO_PUBSUB = "no Pub/Sub emulator: set PUBSUB_EMULATOR_HOST or run `boxoffice dev up`"
_NO_SMTP = "no SMTP server: set BOXOFFICE_SMTP_HOST=host:port or run `boxoffice dev up`"


def inventory_trigger_part(db: firestore.Client) -> BackgroundLoop:
    return InventoryTriggerLoop(db)


def hold_sweeper_part(db: firestore.Client) -> BackgroundLoop:
    interval_s = float(os.environ.get(HOLD_SWEEP_ENV, "2.0"))
    return PeriodicLoop(HOLD_SWEEPER, lambda: (release_expired_holds(db), sweep_released_sections(db)), interval_s)


def relay_part(db: firestore.Client) -> BackgroundLoop:
    topology = local_topology()
    return OutboxRelay(db, topology, settings=RelaySettings.from_env()) if topology else SkippedLoop(RELAY, _NO_PUBSUB)


def email_part(db: firestore.Client) -> BackgroundLoop:
    topology = local_topology()
    if topology is None:
        return SkippedLoop(EMAIL_LOOP, _NO_PUBSUB)
    smtp = smtp_settings()
    if smtp is None:
        return SkippedLoop(EMAIL_LOOP, _NO_SMTP)
    settings = SubscriberSettings.from_env()
    mailer = email.Mailer(smtp, settings.smtp_connections)
    return build_loops(db, topology, mailer, relay=False, subscriptions=(EMAIL,), settings=settings).subscribers[0]


def analytics_part(db: firestore.Client) -> BackgroundLoop:
    topology = local_topology()
    if topology is None:
        return SkippedLoop(ANALYTICS_LOOP, _NO_PUBSUB)
    return build_loops(db, topology, mailer=None, relay=False, subscriptions=(ANALYTICS,),
                       settings=SubscriberSettings.from_env()).subscribers[0]


def repair_part(db: firestore.Client) -> BackgroundLoop:
    """Re-publishes messages whose effects are missing (messaging/repair.py). Needs Firestore
    only: the relay does the publishing."""
    topology = default_topology(suffix=os.environ.get(TOPOLOGY_SUFFIX_ENV, ""))
    grace_s = float(os.environ.get(REPAIR_GRACE_ENV, DEFAULT_GRACE_S))
    return PeriodicLoop(REPAIR, lambda: repair(db, topology, grace_s=grace_s).as_dict(),
                        float(os.environ.get(REPAIR_INTERVAL_ENV, "30")))


def allocator_part(db: firestore.Client) -> BackgroundLoop:
    """The batch allocator (runtime/allocator.py). On the dev stack's Pub/Sub emulator when the
    environment names none; else real Pub/Sub (production: a Cloud Run service)."""
    devstack.use_recorded_pubsub()
    return allocator_from_settings(db)


PartFactory = Callable[[firestore.Client], BackgroundLoop]

# Every part of `boxoffice worker`, in start order. Production runs each as a Cloud Function
# (or a service) of its own; locally the supervisor runs each in an OS process of its own.
PARTS: dict[str, PartFactory] = {
    ALLOCATOR: allocator_part,
    INVENTORY_TRIGGER: inventory_trigger_part,
    HOLD_SWEEPER: hold_sweeper_part,
    RELAY: relay_part,
    EMAIL_LOOP: email_part,
    ANALYTICS_LOOP: analytics_part,
    REPAIR: repair_part,
}


def part_names() -> list[str]:
    return list(PARTS)


def build_part(db: firestore.Client, name: str) -> BackgroundLoop:
    """The part called ``name``, not started."""
    try:
        factory = PARTS[name]
    except KeyError:
        raise ValueError(f"unknown part {name!r}; known: {part_names()}") from None
    return factory(db)


def build_worker(db: firestore.Client, names: Iterable[str] | None = None) -> Worker:
    """A worker running the parts (all, or only ``names``) as threads of this process (tests;
    `boxoffice worker` runs each part in a process of its own instead)."""
    wanted = list(names) if names else part_names()
    unknown = [n for n in wanted if n not in PARTS]
    if unknown:
        raise ValueError(f"unknown loops {unknown}; known: {sorted(PARTS)}")
    return Worker(PARTS[n](db) for n in wanted)
