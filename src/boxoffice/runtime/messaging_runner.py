"""The messaging loops of one process: the outbox relay and the email and analytics subscribers.

Each loop has ``name``, ``start()``, ``stop(timeout)`` and ``status()``, so the worker
(runtime/worker.py, via messaging/loops.py) can host them; ``boxoffice messaging run`` and the
simulator (loadtest/pipeline.py) run them on their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore

from boxoffice.messaging import analytics, email
from boxoffice.messaging.relay import OutboxRelay
from boxoffice.messaging.subscribers import PullingSubscriber, StreamingSubscriber, Subscription
from boxoffice.messaging.topology import ANALYTICS, EMAIL, Topology, publisher_client


@dataclass
class MessagingLoops:
    relay: OutboxRelay | None
    subscribers: list[StreamingSubscriber | PullingSubscriber] = field(default_factory=list)

    @property
    def loops(self) -> list[Any]:
        return ([self.relay] if self.relay else []) + list(self.subscribers)

    def start(self) -> "MessagingLoops":
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


def subscriber_for(sub: Subscription, *, threads: int = 8, max_outstanding: int = 200,
                   probe: Callable[[], None] | None = None) -> StreamingSubscriber | PullingSubscriber:
    """The transport a subscription needs: streaming pull for an ordered one (the client hands
    over each event's messages one at a time, in order), pulled batches handled on ``threads``
    threads for an unordered one (pausing while ``probe`` says a dependency is down)."""
    if sub.spec.ordered:
        return StreamingSubscriber(sub, threads=threads, max_outstanding=max_outstanding)
    return PullingSubscriber(sub, threads=threads, probe=probe)


def firestore_probe(db: firestore.Client) -> Callable[[], None]:
    """Raises unless Firestore answers a one-document read within 5 s."""
    from boxoffice.store.messaging import PROCESSED

    return lambda: db.collection(PROCESSED).limit(1).get(timeout=5)


def build_loops(db: firestore.Client, topology: Topology, mailer: email.Mailer | None, *, relay: bool = True,
                subscriptions: tuple[str, ...] = (EMAIL, ANALYTICS), threads: int = 8,
                max_outstanding: int = 200, relay_idle_s: float = 0.1) -> MessagingLoops:
    """The loops, not started: the relay, a pulling subscriber (batches on ``threads``
    threads) for each unordered subscription (email, analytics) and a streaming one for each
    ordered subscription (one event's messages in order). ``mailer`` sends the emails (SMTP
    settings inside); None only when ``subscriptions`` leaves email out."""
    publisher = publisher_client()

    def send_email(d: Any) -> str:
        if mailer is None:
            raise RuntimeError("build_loops: the email subscriber needs a mailer")
        return email.handle_email(db, mailer, d)

    handlers = {EMAIL: send_email, ANALYTICS: lambda d: analytics.handle_analytics(db, d)}
    database_answers = firestore_probe(db)

    def email_dependencies() -> None:
        database_answers()
        if mailer is not None:
            mailer.probe()

    probes = {EMAIL: email_dependencies, ANALYTICS: database_answers}
    subs: list[StreamingSubscriber | PullingSubscriber] = []
    for name in subscriptions:
        sub = Subscription(db, topology, topology.spec(name), handlers[name], publisher)
        subs.append(subscriber_for(sub, threads=threads, max_outstanding=max_outstanding, probe=probes[name]))
    return MessagingLoops(OutboxRelay(db, topology, publisher=publisher, idle_s=relay_idle_s) if relay else None,
                          subs)
