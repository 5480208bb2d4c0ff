"""Pub/Sub topology as code: topics, subscriptions, retry and dead-letter policies.

``ensure_topology`` creates what is missing and leaves what exists (idempotent); `boxoffice dev up`
runs it against the emulator and an operator runs `boxoffice messaging topology` against a project.

    ticket-events            every message of the outbox (ordering key: the event id)
      ticket-events.email      emails: confirmation, cancellation, waitlist offer (unordered:
                               handled in parallel; per-order causality kept by the handler)
      ticket-events.analytics  sales counters (unordered: counters commute, so run in parallel)
    ticket-events.dead-letter  messages a subscriber gave up on
      ticket-events.dead-letter.hold   keeps them for `boxoffice dlq list|replay`

Facts about the emulator (pubsub-emulator 0.8.20, measured) that shape this:
- subscription filters are accepted but NOT applied: every subscriber receives every type and
  must ack the types it does not handle (it does, and counts them);
- an ordered subscription with a dead-letter policy crashes the emulator's pull when it
  dead-letters (NullPointerException in OrderedMessageBacklog), so an ordered subscription
  (``ordered=True``: none in the default topology since emails went unordered; tests and future
  per-event consumers) gets no native dead-letter policy locally. Subscribers dead-letter at the
  application level anyway (see ``subscribers.process``): after ``max_delivery_attempts`` they
  publish the message with its error to the dead-letter topic and ack it. The native policy,
  where present, is the backstop for a handler that cannot even record its failure.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from google.api_core import exceptions as gexc
from google.protobuf import duration_pb2

from boxoffice.domain.messages import TICKET_EVENTS_TOPIC, MessageType
from boxoffice.log import kv

log = logging.getLogger(__name__)

DEAD_LETTER_TOPIC = f"{TICKET_EVENTS_TOPIC}.dead-letter"
EMAIL = "email"
ANALYTICS = "analytics"

# Types each subscriber handles (also written as the subscription filter, for real Pub/Sub).
EMAIL_TYPES = (MessageType.ORDER_CONFIRMED, MessageType.ORDER_CANCELLED, MessageType.WAITLIST_OFFER)
ANALYTICS_TYPES = (MessageType.ORDER_CONFIRMED, MessageType.ORDER_CANCELLED)


def _filter_for(types: Iterable[str]) -> str:
    return " OR ".join(f'attributes.type = "{t}"' for t in types)


@dataclass(frozen=True)
class SubscriptionSpec:
    name: str  # logical name: "email", "analytics"; also the key of its processed records
    types: tuple[str, ...]
    ordered: bool
    ack_deadline_s: int = 30
    min_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_delivery_attempts: int = 5  # handler failures before the app dead-letters
    native_dead_letter: bool = True
    native_max_delivery_attempts: int | None = None  # the native backstop (5..100); None: the above


@dataclass(frozen=True)
class Topology:
    """Names and policies. ``suffix`` lets tests use fresh topics and subscriptions each."""

    project: str
    suffix: str = ""
    subscriptions: tuple[SubscriptionSpec, ...] = field(default_factory=tuple)

    def topic_id(self, logical: str = TICKET_EVENTS_TOPIC) -> str:
        return f"{logical}{self.suffix}"

    def topic_path(self, logical: str = TICKET_EVENTS_TOPIC) -> str:
        return f"projects/{self.project}/topics/{self.topic_id(logical)}"

    @property
    def dead_letter_topic_path(self) -> str:
        return self.topic_path(DEAD_LETTER_TOPIC)

    def subscription_path(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{TICKET_EVENTS_TOPIC}.{name}{self.suffix}"

    @property
    def dead_letter_hold_path(self) -> str:
        return f"projects/{self.project}/subscriptions/{DEAD_LETTER_TOPIC}.hold{self.suffix}"

    def spec(self, name: str) -> SubscriptionSpec:
        for s in self.subscriptions:
            if s.name == name:
                return s
        raise KeyError(name)

    def with_policies(self, **changes: Any) -> Topology:
        """The same topology with every subscription's policies changed (tests: short backoff)."""
        return replace(self, subscriptions=tuple(replace(s, **changes) for s in self.subscriptions))


def default_topology(project: str | None = None, *, suffix: str = "", emulator: bool | None = None) -> Topology:
    """The production topology: both subscriptions unordered (the ordering key is still the
    event id, for any ordered subscription added later). Emails: see messaging/email.py for
    why per-event order is not needed and how per-order causality is kept."""
    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "demo-boxoffice"
    del emulator  # kept for callers: the emulator difference is applied by ensure_topology now
    return Topology(
        project=project,
        suffix=suffix,
        subscriptions=(
            # Deferred cancellations (RetryLater) are redeliveries too: the native backstop
            # must not count them as failures within CAUSALITY_WAIT_S.
            SubscriptionSpec(EMAIL, EMAIL_TYPES, ordered=False, native_max_delivery_attempts=100),
            SubscriptionSpec(ANALYTICS, ANALYTICS_TYPES, ordered=False),
        ),
    )


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def publisher_client(*, ordering: bool = True, batch_max_messages: int = 100, max_latency_s: float = 0.01) -> Any:
    """A publisher; with ``ordering``, messages of one ordering key are sent in order, batched
    (up to ``batch_max_messages`` per request, waiting at most ``max_latency_s`` for more)."""
    import google.cloud.pubsub_v1 as pubsub_v1

    options = pubsub_v1.types.PublisherOptions(enable_message_ordering=ordering)
    batching = pubsub_v1.types.BatchSettings(max_messages=batch_max_messages, max_latency=max_latency_s)
    return pubsub_v1.PublisherClient(batch_settings=batching, publisher_options=options)


def subscriber_client() -> Any:
    import google.cloud.pubsub_v1 as pubsub_v1

    return pubsub_v1.SubscriberClient()


def ensure_topology(topology: Topology, publisher: Any = None, subscriber: Any = None) -> list[str]:
    """Create the topics and subscriptions that do not exist yet. Returns what was created.

    Existing resources are left as they are (Pub/Sub cannot change a subscription's ordering
    after creation; delete it to apply a changed policy: an existing subscription whose
    ordering differs from its spec is logged as ``topology.ordering_mismatch``)."""
    emulator = bool(os.environ.get("PUBSUB_EMULATOR_HOST"))
    publisher = publisher or publisher_client()
    subscriber = subscriber or subscriber_client()
    created: list[str] = []
    for topic in (topology.topic_path(), topology.dead_letter_topic_path):
        try:
            publisher.create_topic(name=topic)
            created.append(topic)
        except gexc.AlreadyExists:
            pass
    requests: list[dict[str, Any]] = [
        {"name": topology.dead_letter_hold_path, "topic": topology.dead_letter_topic_path,
         "ack_deadline_seconds": 60, "message_retention_duration": _duration(7 * 86400)}
    ]
    for spec in topology.subscriptions:
        req: dict[str, Any] = {
            "name": topology.subscription_path(spec.name),
            "topic": topology.topic_path(),
            "ack_deadline_seconds": spec.ack_deadline_s,
            "enable_message_ordering": spec.ordered,
            "filter": _filter_for(spec.types),
            "retry_policy": {"minimum_backoff": _duration(spec.min_backoff_s),
                             "maximum_backoff": _duration(spec.max_backoff_s)},
        }
        if spec.native_dead_letter and not (spec.ordered and emulator):
            req["dead_letter_policy"] = {"dead_letter_topic": topology.dead_letter_topic_path,
                                         "max_delivery_attempts": spec.native_max_delivery_attempts
                                         or spec.max_delivery_attempts}
        requests.append(req)
    for req in requests:
        try:
            subscriber.create_subscription(request=req)
            created.append(req["name"])
        except gexc.AlreadyExists:
            _warn_if_ordering_differs(subscriber, req)
    return created


def _warn_if_ordering_differs(subscriber: Any, req: dict[str, Any]) -> None:
    # e.g. a dev stack created before emails went unordered: an ordered email subscription
    # would silently serialise each event's emails again.
    try:
        existing = subscriber.get_subscription(subscription=req["name"])
    except gexc.GoogleAPICallError:
        return
    if bool(existing.enable_message_ordering) != bool(req.get("enable_message_ordering")):
        kv(log, logging.WARNING, "topology.ordering_mismatch", subscription=req["name"],
           existing=existing.enable_message_ordering, wanted=req.get("enable_message_ordering"),
           fix="delete the subscription (or `boxoffice dev down && boxoffice dev up`)")


def delete_topology(topology: Topology, publisher: Any = None, subscriber: Any = None) -> None:
    """Remove a (test) topology's subscriptions and topics; missing ones are ignored."""
    publisher = publisher or publisher_client()
    subscriber = subscriber or subscriber_client()
    subs = [topology.subscription_path(s.name) for s in topology.subscriptions] + [topology.dead_letter_hold_path]
    for sub in subs:
        try:
            subscriber.delete_subscription(subscription=sub)
        except gexc.NotFound:
            pass
    for topic in (topology.topic_path(), topology.dead_letter_topic_path):
        try:
            publisher.delete_topic(topic=topic)
        except gexc.NotFound:
            pass

def unary_pull(subscriber: Any, path: str, max_messages: int) -> Any:
    """A pull that returns at once when nothing is there. ``return_immediately`` is deprecated
    on Pub/Sub, but the emulator holds a pull without it until the RPC times out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return subscriber.pull(subscription=path, max_messages=max_messages, return_immediately=True,
                               timeout=10, retry=None)


def recreate_if_missing(topology: Topology, exc: BaseException, publisher: Any = None,
                        subscriber: Any = None) -> bool:
    """Self-healing: when ``exc`` says a topic or subscription does not exist (the Pub/Sub
    emulator restarted and lost them all; an operator deleted one), create what is missing.
    True when it did (the caller retries at once); False for any other error."""
    if not isinstance(exc, gexc.NotFound):
        return False
    created = ensure_topology(topology, publisher, subscriber)
    kv(log, logging.WARNING, "topology.recreated", created=len(created), cause=repr(exc)[:200])
    return True
