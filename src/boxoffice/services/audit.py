"""Consistency audit of an event's inventory, for the simulator and operators.

Checks what must always hold, from the authoritative documents (not the summary):
every shard and the total keep ``available + held + sold == capacity`` with no negative count;
the event's capacity equals the shards'; the live holds account for exactly ``held`` (per
shard and in total); the orders' active tickets and the valid ticket documents account for
exactly ``sold``; and, once the trigger has caught up, the summary equals the shards.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain.model import HoldStatus, TicketStatus, shard_quota
from boxoffice.domain.ticket_types import DEFAULT_POOL_ID, Catalogue
from boxoffice.store.documents import HOLDS, ORDERS, TICKETS, event_from_doc, event_ref, inventory_col, seats_col


def audit_inventory(db: firestore.Client, event_id: str, *, check_summary: bool = True) -> list[str]:
    """Problems found (empty = consistent). ``check_summary=False`` while the worker may lag."""
    problems: list[str] = []
    ev = event_ref(db, event_id).get()
    if not ev.exists:
        return [f"event {event_id} does not exist"]
    event: dict[str, Any] = ev.to_dict() or {}
    catalogue = event_from_doc(event_id, event).catalogue
    # With ticket types, a ticket counts in its pool and, in a shared pool, in its type's counter:
    # the event's totals are the pools'; the counters are checked per type below.
    pools = {p.id for p in catalogue.pools} if catalogue is not None else None
    totals = Counter[str]()
    by_quota: dict[str, Counter[str]] = {}
    shard_held: dict[str, int] = {}
    for snap in inventory_col(db, event_id).stream():
        s = snap.to_dict() or {}
        counts = {k: int(s.get(k, 0)) for k in ("capacity", "available", "held", "sold")}
        by_quota.setdefault(s.get("pool") or DEFAULT_POOL_ID, Counter()).update(counts)
        negative = [k for k, v in counts.items() if v < 0]
        if negative:
            problems.append(f"shard {snap.id}: negative {', '.join(negative)}: {counts}")
        if counts["available"] + counts["held"] + counts["sold"] != counts["capacity"]:
            problems.append(f"shard {snap.id}: available+held+sold != capacity: {counts}")
        if pools is None or (s.get("pool") or DEFAULT_POOL_ID) in pools:
            totals.update(counts)
        shard_held[snap.id] = counts["held"]
    if totals["available"] + totals["held"] + totals["sold"] != totals["capacity"]:
        problems.append(f"total: available+held+sold != capacity: {dict(totals)}")
    if event.get("capacity") != totals["capacity"]:
        problems.append(f"event capacity {event.get('capacity')} != shards' capacity {totals['capacity']}")

    hold_by_shard = Counter[str]()
    live_holds: list[dict[str, Any]] = []
    holds = db.collection(HOLDS).where(filter=FieldFilter("event_id", "==", event_id)).stream()
    for snap in holds:
        h = snap.to_dict() or {}
        if h.get("status") == HoldStatus.ACTIVE.value:
            live_holds.append(h)
            # A ticket of a type capped in a shared pool takes from its pool and its cap: count pools.
            in_pools = sum(n for sid, n in h.get("allocations", {}).items() if pools is None or shard_quota(sid) in pools)
            if in_pools != h.get("quantity"):
                problems.append(f"hold {snap.id}: allocations do not add up to its quantity")
            hold_by_shard.update(h.get("allocations", {}))
    for sid in sorted(set(shard_held) | set(hold_by_shard)):
        if shard_held.get(sid, 0) != hold_by_shard.get(sid, 0):
            problems.append(f"shard {sid}: held {shard_held.get(sid, 0)} != live holds {hold_by_shard.get(sid, 0)}")

    sold_by_orders = 0
    for snap in db.collection(ORDERS).where(filter=FieldFilter("event_id", "==", event_id)).stream():
        o = snap.to_dict() or {}
        sold_by_orders += int(o.get("quantity", 0)) - int(o.get("cancelled_quantity", 0))
    if sold_by_orders != totals["sold"]:
        problems.append(f"orders hold {sold_by_orders} active tickets but shards say sold={totals['sold']}")
    # The library types AggregationQuery.get loosely; the result is [[AggregationResult]].
    count: Any = (db.collection(TICKETS).where(filter=FieldFilter("event_id", "==", event_id))
                  .where(filter=FieldFilter("status", "==", TicketStatus.VALID.value)).count())
    valid = count.get()
    valid_tickets = int(valid[0][0].value)
    if valid_tickets != totals["sold"]:
        problems.append(f"{valid_tickets} valid tickets but shards say sold={totals['sold']}")

    if catalogue is not None:
        problems += _audit_types_and_seats(db, event_id, catalogue, by_quota, live_holds)

    if check_summary:
        summary = event.get("summary") or {}
        for key in ("available", "held", "sold", "capacity"):
            if summary.get(key) != totals[key]:
                problems.append(f"summary {key}={summary.get(key)} != shards {totals[key]}")
    return problems


def _audit_types_and_seats(db: firestore.Client, event_id: str, catalogue: Catalogue,
                           by_quota: dict[str, Counter[str]], live_holds: list[dict[str, Any]]) -> list[str]:
    """Per type: valid tickets == sold of the type's own counter, tickets in live holds == its
    held, and no quota oversold. Per seat: at most one valid ticket or live hold, and exactly the
    seats of valid tickets and live holds have a seat document."""
    problems: list[str] = []
    tickets = [s.to_dict() or {} for s in db.collection(TICKETS).where(filter=FieldFilter("event_id", "==", event_id))
               .where(filter=FieldFilter("status", "==", TicketStatus.VALID.value)).stream()]
    per_type = Counter(t.get("type_id") for t in tickets)
    held_type = Counter[str]()
    held_seats = Counter[str]()
    for h in live_holds:
        for line in h.get("lines", ()):
            held_type[line["type_id"]] += line["quantity"]
            held_seats.update(line.get("seat_ids", ()))
    for t in catalogue.types:
        counter = by_quota.get(t.counter, Counter())
        if per_type.get(t.id, 0) != counter["sold"]:
            problems.append(f"type {t.id}: {per_type.get(t.id, 0)} valid tickets but its counter says "
                            f"sold={counter['sold']}")
        if held_type.get(t.id, 0) != counter["held"]:
            problems.append(f"type {t.id}: {held_type.get(t.id, 0)} tickets in live holds but its counter says "
                            f"held={counter['held']}")
    for quota, capacity in catalogue.quota_capacities().items():
        counts = by_quota.get(quota, Counter())
        if counts["capacity"] != capacity or counts["sold"] + counts["held"] > capacity:
            problems.append(f"quota {quota}: {dict(counts)} against a capacity of {capacity}")
    unknown = sorted(str(t) for t in set(per_type) - {t.id for t in catalogue.types})
    if unknown:
        problems.append(f"valid tickets of unknown types: {unknown}")
    seats = Counter(t["seat"] for t in tickets if t.get("seat"))
    twice = sorted(s for s, n in (seats + held_seats).items() if n > 1)
    if twice:
        problems.append(f"seats with more than one valid ticket or live hold: {twice[:20]}")
    seated_types = {t.id for t in catalogue.types if t.seated}
    seated_tickets = sum(n for t, n in per_type.items() if t in seated_types)
    if seated_tickets != sum(seats.values()):
        problems.append(f"{seated_tickets} valid tickets of seated types but {sum(seats.values())} carry a seat")
    docs = {s.id for s in seats_col(db, event_id).select([]).stream()}
    taken = set(seats) | set(held_seats)
    if docs != taken:
        problems.append(f"seat documents and seats of valid tickets and live holds differ: {len(docs - taken)} "
                        f"without a ticket or hold, {len(taken - docs)} tickets or held seats without a seat document")
    return problems
