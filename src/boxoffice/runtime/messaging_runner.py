"""The messaging loops of one process: the outbox relay and the email and analytics subscribers.

Each loop has ``name``, ``start()``, ``stop(timeout)`` and ``status()``, so the worker
(runtime/root.py builds them as the worker's parts) can host them; ``boxoffice messaging run`` and the
simulator (loadtest/sale_pipeline.py) run them on their own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore

from boxoffice.messaging import analytics, email
from boxoffice.messaging.relay import OutboxRelay, RelaySettings
from boxoffice.messaging.subscribers import PullingSubscriber, StreamingSubscriber, Subscription
from boxoffice.messaging.topology import ANALYTICS, EMAIL, Topology, publisher_client
from boxoffice.store.messaging import PROCESSED


@dataclass
class MessagingLoops:
    relay: OutboxRelay | None
    subscribers: list[StreamingSubscriber | PullingSubscriber] = field(default_factory=list)

    @property
    def loops(self) -> list[Any]:
        return ([self.relay] if self.relay else []) + list(self.subscribers)

    def start(self) -> MessagingLoops:
        for loop in self.loops:
            loop.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        for loop in reversed(self.loops):
            loop.stop(timeout)

    def counts(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.relay:
            out["relay"] = {"published": self.relay.published, "errors": self.relay.errors}
        for s in self.subscribers:
            out[s.sub.spec.name] = dict(s.stats.outcomes)
        return out


@dataclass(frozen=True)
class SubscriberSettings:
    """Flow control and thread counts of the subscribers (defaults measured: docs/parts/messaging.md;
    environment overrides for the worker: ``from_env``)."""

    batch: int = 500  # messages per pull: one batch-handler call, one ack call
    pullers: int = 2  # pulls in flight at once per subscription (unacked at most pullers x batch)
    smtp_connections: int = 8  # emails sent in parallel, each on a pooled SMTP connection
    threads: int = 8  # handler threads where there is no batch handler (and for ordered subscriptions)
    max_outstanding: int = 200  # flow control of a streaming (ordered) subscriber

    @classmethod
    def from_env(cls) -> SubscriberSettings:
        """BOXOFFICE_PULL_BATCH, BOXOFFICE_PULLERS, BOXOFFICE_SMTP_CONNECTIONS, BOXOFFICE_HANDLER_THREADS."""
        env = {"batch": "BOXOFFICE_PULL_BATCH", "pullers": "BOXOFFICE_PULLERS",
               "smtp_connections": "BOXOFFICE_SMTP_CONNECTIONS", "threads": "BOXOFFICE_HANDLER_THREADS"}
        return cls(**{field: int(os.environ[var]) for field, var in env.items() if os.environ.get(var)})


def subscriber_for(sub: Subscription, *, threads: int = 8, max_outstanding: int = 200,
                   settings: SubscriberSettings | None = None,
                   probe: Callable[[], None] | None = None) -> StreamingSubscriber | PullingSubscriber:
    """The transport a subscription needs: streaming pull for an ordered one (the client hands
    over each event's messages one at a time, in order), pulled batches for an unordered one
    (pausing while ``probe`` says a dependency is down)."""
    if settings is None:
        settings = SubscriberSettings(threads=threads, max_outstanding=max_outstanding)
    if sub.spec.ordered:
        return StreamingSubscriber(sub, threads=settings.threads, max_outstanding=settings.max_outstanding)
    return PullingSubscriber(sub, threads=settings.threads, batch=settings.batch, pullers=settings.pullers,
                             probe=probe)


def firestore_probe(db: firestore.Client) -> Callable[[], None]:
    """Raises unless Firestore answers a one-document read within 5 s."""

    def probe() -> None:
        db.collection(PROCESSED).limit(1).get(timeout=5)

    return probe


def build_loops(db: firestore.Client, topology: Topology, mailer: email.Mailer | None, *, relay: bool = True,
                subscriptions: tuple[str, ...] = (EMAIL, ANALYTICS), settings: SubscriberSettings | None = None,
                relay_settings: RelaySettings | None = None) -> MessagingLoops:
    """The loops, not started: the relay, a pulling subscriber with a batch handler for each
    unordered subscription (email, analytics) and a streaming one, message by message, for each
    ordered subscription (one event's messages in order). ``mailer`` sends the emails (SMTP
    settings and its connection pool inside); None only when ``subscriptions`` leaves email out."""
    settings = settings or SubscriberSettings()
    publisher = publisher_client()

    def need_mailer() -> email.Mailer:
        if mailer is None:
            raise RuntimeError("build_loops: the email subscriber needs a mailer")
        return mailer

    senders = ThreadPoolExecutor(max_workers=mailer.connections if mailer else 1, thread_name_prefix="smtp")

    def email_batch(batch: list[Any]) -> dict[str, Any]:
        return email.handle_email_batch(db, need_mailer(), batch, run=senders.map)

    handlers = {EMAIL: lambda d: email.handle_email(db, need_mailer(), d),
                ANALYTICS: lambda d: analytics.handle_analytics(db, d)}
    batch_handlers = {EMAIL: email_batch, ANALYTICS: lambda batch: analytics.handle_analytics_batch(db, batch)}
    database_answers = firestore_probe(db)

    def email_dependencies() -> None:
        database_answers()
        if mailer is not None:
            mailer.probe()

    probes = {EMAIL: email_dependencies, ANALYTICS: database_answers}
    subs: list[StreamingSubscriber | PullingSubscriber] = []
    for name in subscriptions:
        spec = topology.spec(name)
        sub = Subscription(db, topology, spec, handlers[name], publisher,
                           batch_handler=None if spec.ordered else batch_handlers[name])
        subs.append(subscriber_for(sub, settings=settings, probe=probes[name]))
    return MessagingLoops(OutboxRelay(db, topology, settings=relay_settings) if relay else None,
                          subs)
