"""The messaging loops of one process: the outbox relay and the two streaming subscribers.

Each loop has ``name``, ``start()`` and ``stop(timeout)``, so the worker (runtime/worker.py)
can host them; ``boxoffice messaging run`` runs them on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore

from boxoffice.messaging import analytics, notify
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


def build_loops(db: firestore.Client, topology: Topology, mailer: notify.Mailer, *, relay: bool = True,
                subscriptions: tuple[str, ...] = (EMAIL, ANALYTICS), threads: int = 8,
                max_outstanding: int = 200, relay_idle_s: float = 0.1) -> MessagingLoops:
    """The loops, not started: the relay, a streaming subscriber for each ordered subscription
    (email) and a pulling one for each unordered subscription (analytics). ``mailer`` sends
    the emails (SMTP settings inside)."""
    publisher = publisher_client()
    handlers = {
        EMAIL: lambda d: notify.handle_email(db, mailer, d),
        ANALYTICS: lambda d: analytics.handle_analytics(db, d),
    }
    subs: list[StreamingSubscriber | PullingSubscriber] = []
    for name in subscriptions:
        sub = Subscription(db, topology, topology.spec(name), handlers[name], publisher)
        if sub.spec.ordered:  # streaming pull: the client keeps each event's messages in order
            subs.append(StreamingSubscriber(sub, threads=threads, max_outstanding=max_outstanding))
        else:  # batches handled in parallel (see PullingSubscriber)
            subs.append(PullingSubscriber(sub, threads=threads))
    return MessagingLoops(OutboxRelay(db, topology, publisher=publisher, idle_s=relay_idle_s) if relay else None,
                          subs)
