"""Audit of one event's sale: does the database agree with itself and with what buyers were told?

Checks, each a problem line when it fails:
- the inventory invariants of ``services.audit.audit_inventory``: every shard and the total
  keep available + held + sold == capacity with no negative count; live holds account for
  ``held``; orders' active tickets and valid ticket documents account for ``sold``; the
  summary equals the shards (when ``check_summary``); nothing oversold;
- no user holds more than the per-user limit, and each buyer record equals that user's orders;
- one order per (user, idempotency key), one outbox message per order;
- when the simulator's own ledger is given: every buyer told "you got it" has exactly that
  order, and no buyer told "sold out" or "error" has one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain.model import OrderStatus
from boxoffice.domain.ticket_types import DEFAULT_POOL_ID
from boxoffice.services.audit import audit_inventory
from boxoffice.store.documents import (
    BUYERS,
    ORDERS,
    OUTBOX,
    event_from_doc,
    event_ref,
    inventory_col,
    order_from_doc,
)


@dataclass
class Audit:
    ok: bool
    problems: list[str]
    figures: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, "figures": self.figures}


def audit_sale(
    db: firestore.Client,
    event_id: str,
    ledger: Mapping[str, str] | None = None,
    *,
    check_summary: bool = False,
) -> Audit:
    """Audit an event. ``ledger`` maps order ids the simulator derived to what the buyer was
    told: "sold", "sold_out", "refused" or "error"."""
    problems: list[str] = []
    event = (event_ref(db, event_id).get().to_dict()) or {}
    capacity = int(event.get("capacity", 0))
    per_user_limit = int(event.get("per_user_limit", 0))

    # The inventory invariants (shards, holds, orders, tickets, and the summary when asked)
    # are the operators' audit; this one adds what only a sale's ledger can tell.
    problems += audit_inventory(db, event_id, check_summary=check_summary)
    shards = [s.to_dict() or {} for s in inventory_col(db, event_id).stream()]
    # With ticket types, the event's counts are its pools' (a type's counter sits inside its pool).
    catalogue = event_from_doc(event_id, event).catalogue if event else None
    pools = {p.id for p in catalogue.pools} if catalogue is not None else None
    counted = [d for d in shards if pools is None or (d.get("pool") or DEFAULT_POOL_ID) in pools]
    available, held, sold = (sum(int(d.get(k, 0)) for d in counted) for k in ("available", "held", "sold"))
    oversold = max(0, sold - capacity)
    if oversold:
        problems.append(f"OVERSOLD by {oversold}: {sold} sold of {capacity}")

    orders = [
        order_from_doc(o.id, o.to_dict() or {})
        for o in db.collection(ORDERS).where(filter=FieldFilter("event_id", "==", event_id)).stream()
    ]
    live = [o for o in orders if o.status is not OrderStatus.CANCELLED]
    ordered = sum(o.active_quantity for o in live)

    per_user: dict[str, int] = defaultdict(int)
    for o in live:
        per_user[o.user_id] += o.active_quantity
    over = {u: n for u, n in per_user.items() if n > per_user_limit}
    if over:
        problems.append(f"{len(over)} users over the per-user limit {per_user_limit}: {dict(list(over.items())[:5])}")
    for buyer in event_ref(db, event_id).collection(BUYERS).stream():
        recorded = int((buyer.to_dict() or {}).get("tickets", 0))
        if recorded != per_user.get(buyer.id, 0):
            problems.append(f"buyer record of {buyer.id} says {recorded} tickets, orders say {per_user.get(buyer.id, 0)}")

    keys = Counter((o.user_id, o.idempotency_key) for o in orders)
    doubled = [k for k, n in keys.items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} idempotency keys with more than one order, e.g. {doubled[0]}")

    order_ids = {o.id for o in orders}
    outbox_orders = Counter(
        (m.to_dict() or {}).get("payload", {}).get("order_id")
        for m in db.collection(OUTBOX)
        .where(filter=FieldFilter("event_id", "==", event_id))
        .where(filter=FieldFilter("type", "==", "order.confirmed"))
        .stream()
    )
    missing = order_ids - set(outbox_orders)
    if missing:
        problems.append(f"{len(missing)} orders have no order.confirmed outbox message")
    if any(n > 1 for n in outbox_orders.values()):
        problems.append("an order has more than one order.confirmed outbox message")

    if ledger is not None:
        told_sold = {oid for oid, told in ledger.items() if told == "sold"}
        if told_sold - order_ids:
            problems.append(f"{len(told_sold - order_ids)} buyers were told they got tickets but have no order")
        phantom = {oid for oid in order_ids if ledger.get(oid) not in (None, "sold")}
        if phantom:
            problems.append(f"{len(phantom)} buyers were told no (sold out/error) yet have an order")

    figures = {
        "capacity": capacity,
        "sold": sold,
        "held": held,
        "available": available,
        "orders": len(orders),
        "ordered_quantity": ordered,
        "oversold": oversold,
        "shards": len(shards),
        "buyers_over_limit": len(over),
    }
    return Audit(ok=not problems, problems=problems, figures=figures)
