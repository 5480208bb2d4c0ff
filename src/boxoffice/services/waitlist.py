"""Use cases of the waitlist: a user waits for a sold-out event and is offered returned tickets.

    events/{eventId}/waitlist/{userId}   user_id, joined_at, status (waiting | offered),
                                         offer_id, type_id (an event with ticket types)

Joining is allowed only when the event has no available ticket (checked on the shards, not
the summary); for an event with ticket types, a user waits for one type, allowed when that
type has none left, and is offered tickets of that type as they come back. Offers are made by
the summary refresh (``services.summary``) in the same commit as the summary that shows
tickets came back: the first waiters by ``joined_at``, one per returned ticket, each as a
``waitlist.offer`` outbox message (an email). An offer does not reserve the ticket: the first
to buy gets it (see docs/parts/inventory.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain.errors import EventNotFound, InvalidRequest, NotSoldOut, UnknownTicketType
from boxoffice.domain.model import Event
from boxoffice.domain.ticket_types import DEFAULT_POOL_ID, DEFAULT_TYPE_ID
from boxoffice.store.documents import event_from_doc, event_ref, inventory_col, waitlist_col


@dataclass(frozen=True)
class WaitlistEntry:
    event_id: str
    user_id: str
    status: str
    joined_at: datetime | None
    position: int | None = None  # 1 = next to be offered (when waiting)
    type_id: str | None = None  # the ticket type waited for (an event with types)


def _entry(event_id: str, user_id: str, doc: dict[str, Any]) -> WaitlistEntry:
    return WaitlistEntry(event_id=event_id, user_id=user_id, status=doc.get("status", "waiting"),
                         joined_at=doc.get("joined_at"), type_id=doc.get("type_id"))


def join_waitlist(db: firestore.Client, event_id: str, user_id: str, type_id: str | None = None) -> WaitlistEntry:
    """Put the user on the event's waitlist (idempotent: joining twice keeps the first place;
    joining for another type goes to the back of that type's line).

    An event with ticket types needs ``type_id``: the user waits for that type. Raises
    ``EventNotFound`` (also for a draft: it has no buyers to wait), ``NotSoldOut`` when tickets
    (of the type) can be bought now, ``UnknownTicketType``, ``InvalidRequest`` (no type named).
    """
    if not user_id or "/" in user_id:
        raise InvalidRequest("user id must be non-empty and without '/'")
    event = _require_published(db, event_id)
    if event.catalogue is None:
        if type_id not in (None, DEFAULT_TYPE_ID):
            raise UnknownTicketType([str(type_id)])
        type_id = None
    elif type_id is None:
        raise InvalidRequest("this event has ticket types: name the type to wait for")
    quotas = event.catalogue.type(type_id).quota_ids if event.catalogue is not None and type_id else None
    ref = waitlist_col(db, event_id).document(user_id)
    existing = ref.get()
    mine = existing.to_dict() or {}
    if existing.exists and mine.get("status") == "waiting" and mine.get("type_id") == type_id:
        return _with_position(db, _entry(event_id, user_id, mine))
    left: dict[str, int] = {}
    for s in inventory_col(db, event_id).where(filter=FieldFilter("available", ">", 0)).stream():
        shard = s.to_dict() or {}
        quota = shard.get("pool") or DEFAULT_POOL_ID
        left[quota] = left.get(quota, 0) + int(shard.get("available", 0))
    available = sum(left.values()) if quotas is None else min(left.get(q, 0) for q in quotas)
    if available:
        raise NotSoldOut(event_id, available)
    doc = {"user_id": user_id, "event_id": event_id, "status": "waiting", "joined_at": firestore.SERVER_TIMESTAMP}
    if type_id is not None:
        doc["type_id"] = type_id
    try:
        if existing.exists:  # offered before and missed it: back in line
            ref.set(doc)
        else:
            ref.create(doc)
    except gexc.AlreadyExists:
        pass  # a concurrent join of the same user: theirs stands
    return _with_position(db, _entry(event_id, user_id, ref.get().to_dict() or {}))


def leave_waitlist(db: firestore.Client, event_id: str, user_id: str) -> bool:
    """Leave the waitlist; True if the user was on it (leaving twice is harmless).

    Raises ``EventNotFound`` for an unknown event or a draft, as ``join_waitlist`` does.
    """
    _require_published(db, event_id)
    ref = waitlist_col(db, event_id).document(user_id)
    was = ref.get().exists
    ref.delete()
    return was


def _require_published(db: firestore.Client, event_id: str) -> Event:
    """The event; an unknown event, or a draft (it has no buyers to wait), is ``EventNotFound``."""
    snap = event_ref(db, event_id).get()
    if not snap.exists:
        raise EventNotFound(event_id)
    event = event_from_doc(event_id, snap.to_dict() or {})
    event.require_visible_to(None)
    return event


def _with_position(db: firestore.Client, entry: WaitlistEntry) -> WaitlistEntry:
    if entry.status != "waiting" or entry.joined_at is None:
        return entry
    # The library types AggregationQuery.get loosely; the result is [[AggregationResult]].
    line = waitlist_col(db, entry.event_id).where(filter=FieldFilter("status", "==", "waiting"))
    if entry.type_id is not None:
        line = line.where(filter=FieldFilter("type_id", "==", entry.type_id))
    count: Any = line.where(filter=FieldFilter("joined_at", "<", entry.joined_at)).count()
    ahead = count.get()
    return replace(entry, position=int(ahead[0][0].value) + 1)


def waitlist(db: firestore.Client, event_id: str) -> list[dict[str, Any]]:
    """All entries of an event, in line order."""
    rows = [(s.to_dict() or {}) | {"user_id": s.id} for s in waitlist_col(db, event_id).stream()]
    return sorted(rows, key=lambda r: (r.get("joined_at") is None, r.get("joined_at")))
