"""Firestore documents of the messaging pipeline (paths and converters).

    users/{userId}                                  email, name (who an email goes to)
    processed_messages/{subscription}--{messageId}  a subscriber applied this message's effect
    emails/{messageId}                              one email per message: claim, send, sent
    message_failures/{subscription}--{messageId}    a handler's last error and attempt count
    analytics/{eventId}/shards/{NN}                 sharded sales counters of one event
    relay_leases/{group}.p{NN}                      which relay publishes outbox partition NN now
    relay_members/{group}.{relayId}                 a running relay's heartbeat (fair shares)
    ops/outbox-repair                               the repair's watermark and last run (repair.py)

The message id is the outbox document id (stable: derived from what happened), so a message
published twice maps to the same processed record and the same email record.
"""

from __future__ import annotations

import zlib
from typing import cast

from google.cloud import firestore

PROCESSED = "processed_messages"
EMAILS = "emails"
FAILURES = "message_failures"
ANALYTICS = "analytics"
ANALYTICS_SHARDS = "shards"
RELAY_LEASES = "relay_leases"
RELAY_MEMBERS = "relay_members"
OPS = "ops"
# Counters are spread over shards so that a flash sale does not hammer one document
# (Firestore sustains about one write a second per document).
ANALYTICS_SHARD_COUNT = 10


def _key(subscription: str, message_id: str) -> str:
    return f"{subscription}--{message_id}"


def processed_ref(db: firestore.Client, subscription: str, message_id: str) -> firestore.DocumentReference:
    return db.collection(PROCESSED).document(_key(subscription, message_id))


def email_ref(db: firestore.Client, message_id: str) -> firestore.DocumentReference:
    return db.collection(EMAILS).document(message_id)


def message_failure_ref(db: firestore.Client, subscription: str, message_id: str) -> firestore.DocumentReference:
    return db.collection(FAILURES).document(_key(subscription, message_id))


def analytics_shard_ref(db: firestore.Client, event_id: str, message_id: str) -> firestore.DocumentReference:
    """The counter shard a message adds to: a stable hash, so a redelivery hits the same shard."""
    n = zlib.crc32(message_id.encode()) % ANALYTICS_SHARD_COUNT
    shards = db.collection(ANALYTICS).document(event_id).collection(ANALYTICS_SHARDS)
    return cast(firestore.DocumentReference, shards.document(f"s{n:02d}"))


def analytics_shards_col(db: firestore.Client, event_id: str) -> firestore.CollectionReference:
    return cast(firestore.CollectionReference, db.collection(ANALYTICS).document(event_id).collection(ANALYTICS_SHARDS))


def relay_lease_ref(db: firestore.Client, group: str, partition: int) -> firestore.DocumentReference:
    return db.collection(RELAY_LEASES).document(f"{group}.p{partition:02d}")


def relay_members_col(db: firestore.Client) -> firestore.CollectionReference:
    return db.collection(RELAY_MEMBERS)
def repair_state_ref(db: firestore.Client) -> firestore.DocumentReference:
    return db.collection(OPS).document("outbox-repair")
