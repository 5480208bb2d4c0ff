"""Use case: keep the event's availability summary equal to its shards, and say what changed.

``refresh_summary`` recomputes the summary from all shards of an event (one query, a
consistent snapshot at its read time) and writes it to the event document in one commit
together with the notices the change raises (sold out, low stock, back in stock) and the
waitlist offers, all guarded by the event document's ``update_time``:

- idempotent and order-free: the summary records ``as_of``, the snapshot time it counts every
  shard commit up to; a change committed at or before ``as_of`` is already reflected and
  writes nothing (duplicates, late deliveries);
- coalesced: the event document is written at most once per ``min_interval_s`` (Firestore's
  guideline is about one sustained write a second per document); a change that arrives
  sooner is deferred, and the next write (which reads all shards) includes it;
- no lost update: two writers that read the same event version race on the precondition,
  and the loser re-reads (usually finding its change already reflected);
- monotonic: ``as_of`` never goes back. Any writer of the summary (this trigger, or an
  allocator that writes it in its own commit) must write an ``as_of`` that covers every shard
  commit it counts, guard its write by the event's ``update_time`` and respect ``written_at``
  (at most one write per ``min_interval_s``).

Notices and offers are in the same commit as the summary they are derived from, with ids
derived from that summary's ``as_of``: a summary written once announces once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain import messages
from boxoffice.domain.availability import (
    DEFAULT_MIN_INTERVAL_S,
    compute_summary,
    is_reflected,
    notices,
    offers_by_type,
    offers_to_make,
    wait_before_write,
)
from boxoffice.domain.errors import EventNotFound
from boxoffice.log import kv
from boxoffice.store.documents import (
    event_from_doc,
    event_ref,
    inventory_col,
    outbox_ref,
    outbox_to_doc,
    shard_from_doc,
    waitlist_col,
)

log = logging.getLogger(__name__)

WRITTEN, REFLECTED, DEFERRED, UNCHANGED = "written", "already_reflected", "deferred", "no_change"
CLOCK_MARGIN_S = 0.1
_MAX_RACES = 20


@dataclass(frozen=True)
class SummaryOutcome:
    """What a refresh did. ``write_time`` is the commit time of the summary that reflects the
    change (this call's write, or the earlier write that already covered it)."""

    result: str
    summary: Mapping[str, Any] | None = None
    write_time: datetime | None = None
    wait_s: float = 0.0
    notices: list[str] = field(default_factory=list)
    offers: int = 0


def summary_key(as_of: datetime) -> str:
    """A stable id for one summary write, from its snapshot time (microseconds since the epoch)."""
    return str(int(as_of.timestamp() * 1_000_000))


def refresh_summary(
    db: firestore.Client,
    event_id: str,
    *,
    change_time: datetime | None = None,
    min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
    force: bool = False,
    lead_s: float = 0.0,
) -> SummaryOutcome:
    """Bring the event's summary up to date with its shards (see the module docstring).

    ``change_time``: commit time of the shard change being handled; when the summary already
    reflects it nothing is written. ``force`` (reconciliation): recompute and write regardless
    of ``change_time`` and of the interval. Returns ``DEFERRED`` with ``wait_s`` when the event
    document was written less than ``min_interval_s`` ago (``wait_s``: until ``lead_s`` before
    the interval ends). Raises ``EventNotFound``; Firestore errors propagate to the caller's
    retry policy.

    ``lead_s``: prepare early, commit on time. Within ``lead_s`` of the interval's end the shards
    are read and the summary computed at once, and the commit is sent only once the interval has
    passed by the server's clock (the event's ``read_time`` plus the time elapsed here since it).
    Writes still land at least ``min_interval_s`` apart, but one every interval instead of one
    every interval plus the time the refresh takes (0.2-0.6 s under load), which the summary lag
    paid twice: once in the cadence, once between the shards' read and the commit.
    """
    for _ in range(_MAX_RACES):
        ev = event_ref(db, event_id).get()
        read_at = time.monotonic()
        if not ev.exists:
            raise EventNotFound(event_id)
        doc = ev.to_dict() or {}
        previous = doc.get("summary") or {}
        if not force and is_reflected(previous, change_time):
            return SummaryOutcome(REFLECTED, previous, previous.get("written_at"))
        wait = 0.0
        if not force:
            wait = wait_before_write(previous, ev.read_time, min_interval_s)
            if wait > lead_s:
                return SummaryOutcome(DEFERRED, previous, wait_s=wait - lead_s)
        try:
            # A prepared write waits CLOCK_MARGIN_S more: the emulator stamped a commit up to 0.3 s
            # before its request was sent (measured: the first commit after it started; the rest
            # 1-3 ms after; and two writes 0.94 s apart once mid-sale, improvements.md).
            not_before = read_at + wait + (CLOCK_MARGIN_S if wait > 0 else 0.0)
            return _write(db, event_id, doc, previous, ev.update_time, not_before=not_before)
        except (gexc.FailedPrecondition, gexc.Conflict):
            continue  # another writer got there first; its summary may already cover this change
    raise gexc.Aborted(f"summary of {event_id} kept changing under {_MAX_RACES} attempts")


def _write(
    db: firestore.Client, event_id: str, doc: dict[str, Any], previous: Mapping[str, Any], version: datetime,
    *, not_before: float = 0.0,
) -> SummaryOutcome:
    """Compute and commit the summary; the commit is sent no earlier than ``not_before``
    (``time.monotonic()``)."""
    event = event_from_doc(event_id, doc)
    snaps = list(inventory_col(db, event_id).stream())
    if not snaps:
        raise EventNotFound(event_id)
    as_of = max(s.read_time for s in snaps)
    if isinstance(previous.get("as_of"), datetime) and previous["as_of"] >= as_of:
        # Monotonic: another writer (e.g. a batch allocator writing the summary in its own
        # commit) already published a summary at least this recent; never step back to ours.
        return SummaryOutcome(REFLECTED, previous, previous.get("written_at"))
    source_time = max(s.update_time for s in snaps)
    summary = compute_summary((shard_from_doc(s.id, s.to_dict() or {}) for s in snaps),
                              event.status, event.low_stock_threshold, event.catalogue)
    key = summary_key(as_of)
    raised = notices(previous, summary, event.low_stock_threshold) if event.status.value == "on_sale" else []
    # Waiters of a single-type event wait for any ticket; of an event with types, for one type.
    lines = {None: offers_to_make(previous, summary)} if event.catalogue is None else offers_by_type(previous, summary)
    waiting: list[tuple[Any, str | None, int]] = []
    for type_id, n_offers in lines.items():
        if not n_offers:
            continue
        query = waitlist_col(db, event_id).where(filter=FieldFilter("status", "==", "waiting"))
        if type_id is not None:
            query = query.where(filter=FieldFilter("type_id", "==", type_id))
        waiting += [(entry, type_id, n_offers) for entry in query.order_by("joined_at").limit(n_offers).stream()]
    new_doc = summary.as_doc() | {
        "as_of": as_of,  # every shard commit up to this instant is counted
        "source_time": source_time,  # the newest shard change counted (for lag figures)
        "written_at": firestore.SERVER_TIMESTAMP,
        "updated_at": firestore.SERVER_TIMESTAMP,
    }
    batch = db.batch()
    batch.update(event_ref(db, event_id), {"summary": new_doc, "summary_writes": firestore.Increment(1)},
                 option=db.write_option(last_update_time=version))
    for kind in raised:
        message = messages.inventory_notice(kind, event_id, key, summary.as_doc())
        batch.create(outbox_ref(db, message.id), outbox_to_doc(message))
    for entry, type_id, back in waiting:
        batch.update(entry.reference, {"status": "offered", "offered_at": firestore.SERVER_TIMESTAMP, "offer_id": key},
                     option=db.write_option(last_update_time=entry.update_time))
        message = messages.waitlist_offer(event_id, entry.id, key, summary.available if type_id is None else back,
                                          type_id=type_id)
        batch.create(outbox_ref(db, message.id), outbox_to_doc(message))
    pause = not_before - time.monotonic()
    if pause > 0:
        time.sleep(pause)  # the interval ends by the server's clock before the commit is sent
    results = batch.commit()
    write_time = results[0].update_time
    kv(log, logging.INFO, "summary.written", event_id=event_id, available=summary.available, held=summary.held,
       sold=summary.sold, state=summary.state, notices=",".join(raised) or None, offers=len(waiting))
    written = dict(new_doc, written_at=write_time, updated_at=write_time)
    return SummaryOutcome(WRITTEN, written, write_time, notices=raised, offers=len(waiting))


def wait_for_summary(
    db: firestore.Client,
    event_id: str,
    *,
    change_time: datetime | None = None,
    min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
    max_wait_s: float = 30.0,
    sleep: Any = time.sleep,
) -> SummaryOutcome:
    """``refresh_summary``, waiting out the interval instead of returning ``DEFERRED``.

    For callers that cannot come back later (a Cloud Function invocation): it returns once a
    summary reflecting the change is written, by this call or by a concurrent one.
    """
    give_up_at = time.monotonic() + max_wait_s
    while True:
        outcome = refresh_summary(db, event_id, change_time=change_time, min_interval_s=min_interval_s)
        if outcome.result != DEFERRED:
            return outcome
        if time.monotonic() + outcome.wait_s > give_up_at:
            raise TimeoutError(f"summary of {event_id} not written within {max_wait_s}s")
        sleep(outcome.wait_s + 0.01)
