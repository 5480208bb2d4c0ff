"""The dead-letter topic: what subscribers gave up on, with the error, and how to retry it.

A subscriber dead-letters a message itself after ``max_delivery_attempts`` failed deliveries
(see ``subscribers.process``): it publishes the original data and attributes plus
``dl_subscription``, ``dl_error``, ``dl_attempts`` to the dead-letter topic, then acks. Messages
that Pub/Sub's own dead-letter policy forwards (the backstop) carry no error attribute; their
error is in ``message_failures/{subscription}--{messageId}``.

The ``.hold`` subscription keeps them. ``list_dead_letters`` peeks (pulls, then hands them
back at once); ``replay`` republishes to the main topic, with the same message id so that
subscribers that already handled it do nothing, and acks them on the dead-letter subscription.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.cloud import firestore

from boxoffice.messaging.topology import Topology, unary_pull
from boxoffice.store.messaging import message_failure_ref

DL_ATTRS = ("dl_subscription", "dl_error", "dl_attempts")


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    type: str
    event_id: str
    subscription: str
    error: str
    attempts: int
    data: bytes
    attributes: dict[str, str]
    ack_id: str


def publish_dead_letter(publisher: Any, topology: Topology, data: bytes, attributes: dict[str, str],
                        subscription: str, error: str, attempts: int) -> None:
    attrs = {k: v for k, v in attributes.items() if not k.startswith("googclient_")}
    attrs.update(dl_subscription=subscription, dl_error=error[:1000], dl_attempts=str(attempts))
    # No ordering key: the dead-letter topic is not ordered, and one poison message must not
    # pause the publisher's key for the event.
    publisher.publish(topology.dead_letter_topic_path, data, **attrs).result(timeout=30)


def _pull(subscriber: Any, topology: Topology, max_messages: int) -> list[Any]:
    out: list[Any] = []
    while len(out) < max_messages:
        resp = unary_pull(subscriber, topology.dead_letter_hold_path, min(100, max_messages - len(out)))
        if not resp.received_messages:
            break
        out.extend(resp.received_messages)
    return out


def _as_dead_letter(db: firestore.Client | None, rm: Any) -> DeadLetter:
    attrs = dict(rm.message.attributes)
    sub = attrs.get("dl_subscription", "")
    error = attrs.get("dl_error", "")
    if not error and db is not None and sub and attrs.get("message_id"):
        doc = message_failure_ref(db, sub, attrs["message_id"]).get().to_dict() or {}
        error = str(doc.get("last_error", ""))
    return DeadLetter(
        message_id=attrs.get("message_id", rm.message.message_id), type=attrs.get("type", ""),
        event_id=attrs.get("event_id", ""), subscription=sub, error=error,
        attempts=int(attrs.get("dl_attempts") or rm.delivery_attempt or 0),
        data=bytes(rm.message.data), attributes=attrs, ack_id=rm.ack_id,
    )


def list_dead_letters(subscriber: Any, topology: Topology, db: firestore.Client | None = None,
                      max_messages: int = 100) -> list[DeadLetter]:
    """Peek at the dead-letter topic's messages without removing them."""
    received = _pull(subscriber, topology, max_messages)
    if received:
        subscriber.modify_ack_deadline(subscription=topology.dead_letter_hold_path,
                                       ack_ids=[r.ack_id for r in received], ack_deadline_seconds=0)
    return [_as_dead_letter(db, r) for r in received]


def replay(subscriber: Any, publisher: Any, topology: Topology, db: firestore.Client | None = None,
           *, max_messages: int = 100, message_id: str | None = None) -> list[DeadLetter]:
    """Republish dead letters (all, or the one with ``message_id``) to the main topic and remove
    them from the dead-letter subscription. Their failure records are reset, so each gets the
    full number of attempts again."""
    received = _pull(subscriber, topology, max_messages)
    chosen = [r for r in received if message_id is None or r.message.attributes.get("message_id") == message_id]
    others = [r for r in received if r not in chosen]
    if others:
        subscriber.modify_ack_deadline(subscription=topology.dead_letter_hold_path,
                                       ack_ids=[r.ack_id for r in others], ack_deadline_seconds=0)
    done: list[DeadLetter] = []
    for r in chosen:
        dl = _as_dead_letter(db, r)
        attrs = {k: v for k, v in dl.attributes.items() if k not in DL_ATTRS and not k.startswith("googclient_")}
        if db is not None and dl.subscription:
            message_failure_ref(db, dl.subscription, dl.message_id).delete()
        publisher.publish(topology.topic_path(), dl.data, ordering_key=dl.event_id, **attrs).result(timeout=30)
        subscriber.acknowledge(subscription=topology.dead_letter_hold_path, ack_ids=[r.ack_id])
        done.append(dl)
    return done


def dead_letter_count(subscriber: Any, topology: Topology) -> int:
    return len(list_dead_letters(subscriber, topology, None, max_messages=1000))
