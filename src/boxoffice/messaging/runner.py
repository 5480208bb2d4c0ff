"""The messaging loops of one process: the outbox relay and the email and analytics subscribers.

Each loop has ``name``, ``start()``, ``stop(timeout)`` and ``status()``, so the worker
(runtime/worker.py, via messaging/loops.py) can host them; ``boxoffice messaging run`` and the
simulator (loadtest/pipeline.py) run them on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore

from boxoffice.messaging import analytics, notify
from boxoffice.messaging.relay import OutboxRelay, RelaySettings
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


def subscriber_for(sub: Subscription, *, threads: int = 8,
                   max_outstanding: int = 200) -> StreamingSubscriber | PullingSubscriber:
    """The transport a subscription needs: streaming pull for an ordered one (the client hands
    over each event's messages one at a time, in order), pulled batches handled on ``threads``
    threads for an unordered one."""
    if sub.spec.ordered:
        return StreamingSubscriber(sub, threads=threads, max_outstanding=max_outstanding)
    return PullingSubscriber(sub, threads=threads)


def build_loops(db: firestore.Client, topology: Topology, mailer: notify.Mailer | None, *, relay: bool = True,
                subscriptions: tuple[str, ...] = (EMAIL, ANALYTICS), threads: int = 8,
                max_outstanding: int = 200, relay_settings: RelaySettings | None = None) -> MessagingLoops:
    """The loops, not started: the relay, a pulling subscriber (batches on ``threads``
    threads) for each unordered subscription (email, analytics) and a streaming one for each
    ordered subscription (one event's messages in order). ``mailer`` sends the emails (SMTP
    settings inside); None only when ``subscriptions`` leaves email out."""
    publisher = publisher_client()

    def email(d: Any) -> str:
        if mailer is None:
            raise RuntimeError("build_loops: the email subscriber needs a mailer")
        return notify.handle_email(db, mailer, d)

    handlers = {EMAIL: email, ANALYTICS: lambda d: analytics.handle_analytics(db, d)}
    subs: list[StreamingSubscriber | PullingSubscriber] = []
    for name in subscriptions:
        sub = Subscription(db, topology, topology.spec(name), handlers[name], publisher)
        subs.append(subscriber_for(sub, threads=threads, max_outstanding=max_outstanding))
    return MessagingLoops(OutboxRelay(db, topology, settings=relay_settings) if relay else None,
                          subs)
