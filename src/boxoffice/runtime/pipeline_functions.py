"""Cloud Functions for Firebase (production): thin wrappers over the same relay and handlers.

- ``publish_outbox``: on creation of outbox/{messageId}, publish it and mark it published;
- ``sweep_outbox``: every minute, publish stragglers (a function that failed or timed out) and
  the messages ``repair_outbox`` marked for publishing again;
- ``repair_outbox``: every 5 minutes, find published messages whose effects are missing (the
  broker lost them) and mark them unpublished again (messaging/repair.py);
- ``email_subscriber`` / ``analytics_subscriber``: on_message_published with retry, so a raised
  error makes Pub/Sub redeliver with backoff. The Eventarc subscription has no filter and no
  dead-letter policy of ours: handlers ack (return) types they do not handle, and dead-letter
  at the application level after ``max_delivery_attempts`` exactly as locally
  (``subscribers.process``), so a poison message still lands in the dead-letter topic with
  its error. Configure the SMTP relay with BOXOFFICE_SMTP_HOST (+ _USER, _PASSWORD, _STARTTLS).

Imported by functions/main.py; importing this module needs firebase_functions (deploy only).
"""

from __future__ import annotations

import base64
from typing import Any

from firebase_functions import firestore_fn, pubsub_fn, scheduler_fn
from google.cloud.firestore_v1 import DocumentSnapshot

from boxoffice.domain.messages import TICKET_EVENTS_TOPIC
from boxoffice.messaging import analytics, email, relay, repair
from boxoffice.messaging.subscribers import Subscription, Verdict, process
from boxoffice.messaging.topology import ANALYTICS, EMAIL
from boxoffice.runtime import root


@firestore_fn.on_document_created(document="outbox/{messageId}")
def publish_outbox(event: firestore_fn.Event[DocumentSnapshot[Any] | None]) -> None:
    snap = event.data
    if snap is None:
        return
    doc = snap.to_dict() or {}
    if doc.get("published_at") is None:
        clients = root.cloud()
        relay.publish_one(clients.firestore(), clients.publisher(), clients.topology(), snap.id, doc)


@scheduler_fn.on_schedule(schedule="every 1 minutes")
def sweep_outbox(event: scheduler_fn.ScheduledEvent) -> None:
    clients = root.cloud()
    while relay.sweep(clients.firestore(), clients.publisher(), clients.topology()).full:
        pass


@scheduler_fn.on_schedule(schedule="every 5 minutes")
def repair_outbox(event: scheduler_fn.ScheduledEvent) -> None:
    clients = root.cloud()
    while repair.repair(clients.firestore(), clients.topology()).full:
        pass


def _deliver(name: str, event: Any) -> None:
    msg = event.data.message
    data = base64.b64decode(msg.data or "")
    clients = root.cloud()
    db, topo = clients.firestore(), clients.topology()
    if name == EMAIL:
        mailer = clients.mailer()
        handler = lambda d: email.handle_email(db, mailer, d)  # noqa: E731
    else:
        handler = lambda d: analytics.handle_analytics(db, d)  # noqa: E731
    sub = Subscription(db, topo, topo.spec(name), handler, clients.publisher())
    if process(sub, data, dict(msg.attributes or {})) is Verdict.NACK:
        raise RuntimeError(f"{name}: message {msg.attributes.get('message_id')} failed; retried by Pub/Sub")


@pubsub_fn.on_message_published(topic=TICKET_EVENTS_TOPIC, retry=True)
def email_subscriber(event: Any) -> None:
    _deliver(EMAIL, event)


@pubsub_fn.on_message_published(topic=TICKET_EVENTS_TOPIC, retry=True)
def analytics_subscriber(event: Any) -> None:
    _deliver(ANALYTICS, event)
