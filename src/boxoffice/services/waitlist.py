"""Use cases of the waitlist: a user waits for a sold-out event and is offered returned tickets.

    events/{eventId}/waitlist/{userId}   user_id, joined_at, status (waiting | offered), offer_id

Joining is allowed only when the event has no available ticket (checked on the shards, not
the summary). Offers are made by the summary refresh (``services.summary``) in the same
commit as the summary that shows tickets came back: the first waiters by ``joined_at``, one
per returned ticket, each as a ``waitlist.offer`` outbox message (an email). An offer does not
reserve the ticket: the first to buy gets it (see docs/parts/inventory.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain.errors import EventNotFound, InvalidRequest, NotSoldOut
from boxoffice.store.documents import event_from_doc, event_ref, inventory_col, waitlist_col


@dataclass(frozen=True)
class WaitlistEntry:
    event_id: str
    user_id: str
    status: str
    joined_at: datetime | None
    position: int | None = None  # 1 = next to be offered (when waiting)


def _entry(event_id: str, user_id: str, doc: dict[str, Any]) -> WaitlistEntry:
    return WaitlistEntry(event_id=event_id, user_id=user_id, status=doc.get("status", "waiting"),
                         joined_at=doc.get("joined_at"))


def join_waitlist(db: firestore.Client, event_id: str, user_id: str) -> WaitlistEntry:
    """Put the user on the event's waitlist (idempotent: joining twice keeps the first place).

    Raises ``EventNotFound`` (also for a draft: it has no buyers to wait), ``NotSoldOut`` when
    tickets can be bought now.
    """
    if not user_id or "/" in user_id:
        raise InvalidRequest("user id must be non-empty and without '/'")
    _require_published(db, event_id)
    ref = waitlist_col(db, event_id).document(user_id)
    existing = ref.get()
    if existing.exists and (existing.to_dict() or {}).get("status") == "waiting":
        return _with_position(db, _entry(event_id, user_id, existing.to_dict() or {}))
    available = sum((s.to_dict() or {}).get("available", 0) for s in
                    inventory_col(db, event_id).where(filter=FieldFilter("available", ">", 0)).stream())
    if available:
        raise NotSoldOut(event_id, available)
    doc = {"user_id": user_id, "event_id": event_id, "status": "waiting", "joined_at": firestore.SERVER_TIMESTAMP}
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


def _require_published(db: firestore.Client, event_id: str) -> None:
    """An unknown event, or a draft (it has no buyers to wait), is ``EventNotFound``."""
    snap = event_ref(db, event_id).get()
    if not snap.exists:
        raise EventNotFound(event_id)
    event_from_doc(event_id, snap.to_dict() or {}).require_visible_to(None)


def _with_position(db: firestore.Client, entry: WaitlistEntry) -> WaitlistEntry:
    if entry.status != "waiting" or entry.joined_at is None:
        return entry
    # The library types AggregationQuery.get loosely; the result is [[AggregationResult]].
    count: Any = (waitlist_col(db, entry.event_id).where(filter=FieldFilter("status", "==", "waiting"))
                  .where(filter=FieldFilter("joined_at", "<", entry.joined_at)).count())
    ahead = count.get()
    return replace(entry, position=int(ahead[0][0].value) + 1)


def waitlist(db: firestore.Client, event_id: str) -> list[dict[str, Any]]:
    """All entries of an event, in line order."""
    rows = [(s.to_dict() or {}) | {"user_id": s.id} for s in waitlist_col(db, event_id).stream()]
    return sorted(rows, key=lambda r: (r.get("joined_at") is None, r.get("joined_at")))
