"""The availability summary clients see, and the notices its changes raise. Pure Python.

The summary is a display copy computed from all inventory shards at one snapshot time; it may
lag the shards by a second or two, the shards decide. Because it is always recomputed from the
shards (never patched with deltas), applying a change twice, or changes out of order, gives the
same summary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from boxoffice.domain.messages import MessageType
from boxoffice.domain.model import InventoryShard, SaleStatus
from boxoffice.domain.ticket_types import Catalogue

SOLD_OUT = "sold_out"
# The event doc takes about one sustained write a second (Firestore's guideline per document).
DEFAULT_MIN_INTERVAL_S = 1.0
# How long before the interval ends a writer may read the shards (services/summary.py, lead_s):
# about the time a refresh's reads take under load on the emulator.
SUMMARY_LEAD_S = 0.3
# Waitlist offers per summary write: bounded so the write (with its outbox docs) stays small.
MAX_OFFERS_PER_WRITE = 50


@dataclass(frozen=True)
class Summary:
    available: int
    held: int
    sold: int
    capacity: int
    state: str
    low_stock: bool
    shards: int
    # per ticket type, for an event with types: available, held, sold, capacity
    types: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def as_doc(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "held": self.held,
            "sold": self.sold,
            "capacity": self.capacity,
            "state": self.state,
            "low_stock": self.low_stock,
            "shards": self.shards,
        } | ({"types": {t: dict(c) for t, c in self.types.items()}} if self.types else {})


def compute_summary(shards: Iterable[InventoryShard], status: SaleStatus, low_stock_threshold: int,
                    catalogue: Catalogue | None = None) -> Summary:
    """Totals of the event from its pools' shards; with ``catalogue``, also per type (from each
    type's own counter; a type's ``available`` is also bounded by its shared pool)."""
    every = list(shards)
    types: dict[str, dict[str, int]] = {}
    items = every
    if catalogue is not None:
        per_quota: dict[str, dict[str, int]] = {}
        for sh in every:
            q = per_quota.setdefault(sh.pool, {"available": 0, "held": 0, "sold": 0, "capacity": 0})
            for k in q:
                q[k] += getattr(sh, k)
        left = {quota: c["available"] for quota, c in per_quota.items()}
        for t, can in catalogue.available_by_type(left).items():
            counter = per_quota.get(catalogue.type(t).counter, {})
            types[t] = {"available": can, "held": counter.get("held", 0), "sold": counter.get("sold", 0),
                        "capacity": counter.get("capacity", 0)}
        pools = {p.id for p in catalogue.pools}
        items = [sh for sh in every if sh.pool in pools]
        # A pool whose types all reached their caps sells nothing more, whatever it has left.
        available = sum(min(left.get(p.id, 0), sum(types[t.id]["available"] for t in catalogue.types
                                                   if t.pool_id == p.id)) for p in catalogue.pools)
    else:
        available = sum(s.available for s in items)
    held = sum(s.held for s in items)
    sold = sum(s.sold for s in items)
    if status is not SaleStatus.ON_SALE:
        state = status.value
    else:
        state = SOLD_OUT if available == 0 else SaleStatus.ON_SALE.value
    return Summary(
        available=available,
        held=held,
        sold=sold,
        capacity=sum(s.capacity for s in items),
        state=state,
        low_stock=0 < available <= low_stock_threshold,
        shards=len(every),
        types=types,
    )


def gone_per_summary(summary_doc: Mapping[str, Any] | None, lines: Sequence[tuple[str, int]], *,
                     typed: bool) -> str | None:
    """What an app instance may refuse at once, from the event's summary, without queueing.

    Returns ``""`` when the summary shows the event (a single-type event) with nothing left,
    the type id of a requested line whose type shows nothing left, else None (ask the
    allocator). The summary trails the shards by about a second (at most one write a second),
    so a buyer may be told "sold out" up to about a second after a ticket came back (a
    cancellation, an expired hold); it shows 0 only once the last ticket has gone.
    """
    if not summary_doc:
        return None
    if lines:
        types = summary_doc.get("types") or {}
        for type_id, _ in lines:
            row = types.get(type_id)
            if row is not None and row.get("available") == 0:
                return type_id
        return None
    if not typed and summary_doc.get("available") == 0:
        return ""
    return None


def same_counts(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> bool:
    """A shard write that changed none of the counts (e.g. a metadata touch) needs no summary."""
    if before is None or after is None:
        return False
    keys = ("capacity", "available", "held", "sold")
    return all(before.get(k) == after.get(k) for k in keys)


def is_reflected(summary_doc: Mapping[str, Any] | None, change_time: datetime | None) -> bool:
    """Whether a summary already counts a shard change committed at ``change_time``.

    ``as_of`` is the snapshot time the summary was computed at: every commit at or before it
    is included. This is what makes duplicate and out-of-order deliveries no-ops.
    """
    if not summary_doc or change_time is None:
        return False
    as_of = summary_doc.get("as_of")
    return as_of is not None and as_of >= change_time


def wait_before_write(summary_doc: Mapping[str, Any] | None, now: datetime, min_interval_s: float) -> float:
    """Seconds to wait so the event document is written at most once per ``min_interval_s``."""
    if not summary_doc or summary_doc.get("written_at") is None:
        return 0.0
    written_at: datetime = summary_doc["written_at"]
    elapsed = (now - written_at).total_seconds()
    return max(0.0, min_interval_s - elapsed)


def notices(previous: Mapping[str, Any] | None, new: Summary, low_stock_threshold: int) -> list[str]:
    """Which notices the step from ``previous`` to ``new`` raises (message types).

    sold out: tickets were available and now none are; back in stock: the reverse;
    low stock: availability fell to the threshold or below (and is not zero).
    """
    out: list[str] = []
    before = previous.get("available") if previous else None
    if before is None:
        return out
    if before > 0 and new.available == 0:
        out.append(MessageType.SOLD_OUT)
    if before == 0 and new.available > 0:
        out.append(MessageType.BACK_IN_STOCK)
    if 0 < new.available <= low_stock_threshold < before:
        out.append(MessageType.LOW_STOCK)
    return out


def offers_by_type(previous: Mapping[str, Any] | None, new: Summary) -> dict[str, int]:
    """An event with ticket types: per type, how many of its waiters to offer tickets (as many
    of that type as came back since the last summary)."""
    if new.state != SaleStatus.ON_SALE.value or not previous:
        return {}
    before = previous.get("types") or {}
    out: dict[str, int] = {}
    for type_id, counts in new.types.items():
        back = counts["available"] - int((before.get(type_id) or {}).get("available", 0))
        if back > 0:
            out[type_id] = min(MAX_OFFERS_PER_WRITE, back)
    return out


def offers_to_make(previous: Mapping[str, Any] | None, new: Summary) -> int:
    """How many waiting users to offer tickets: as many as came back since the last summary."""
    if new.state != SaleStatus.ON_SALE.value or not previous:
        return 0
    return max(0, min(MAX_OFFERS_PER_WRITE, new.available - int(previous.get("available", 0))))
