"""The ``--json`` shapes of events, orders and holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from boxoffice.domain.model import Event, Hold, Order
from boxoffice.domain.ticket_types import OrderLine


def event_json(event: Event, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": event.id,
        "name": event.name,
        "venue": event.venue,
        "starts_at": event.starts_at.isoformat(),
        "price": event.price,
        "currency": event.currency,
        "capacity": event.capacity,
        "per_order_max": event.per_order_max,
        "per_user_limit": event.per_user_limit,
        "shard_count": event.shard_count,
        "status": event.status.value,
        "hold_minutes": event.hold_minutes,
        "low_stock_threshold": event.low_stock_threshold,
    }
    if event.catalogue is not None:
        data["ticket_types"] = [{"id": t.id, "name": t.name, "price": t.price, "pool": t.pool_id, "cap": t.cap,
                                 "per_order_max": t.per_order_max, "per_user_limit": t.per_user_limit,
                                 "seated": t.seated} for t in event.catalogue.types]
        data["seated"] = event.seat_map is not None
    if summary is not None:
        data["summary"] = {k: v for k, v in summary.items() if k != "updated_at"} | (
            {"updated_at": summary["updated_at"].isoformat()} if summary.get("updated_at") else {}
        )
    return data


def order_json(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "event_id": order.event_id,
        "user_id": order.user_id,
        "quantity": order.quantity,
        "amount": order.amount,
        "currency": order.currency,
        "status": order.status.value,
        "ticket_ids": list(order.ticket_ids),
        "allocations": dict(order.allocations),
        "idempotency_key": order.idempotency_key,
    } | ({"lines": lines_json(order.lines)} if order.lines else {})


def lines_json(lines: Sequence[OrderLine]) -> list[dict[str, Any]]:
    return [{"type_id": ln.type_id, "quantity": ln.quantity, "unit_price": ln.unit_price,
             "amount": ln.amount, "seat_ids": list(ln.seat_ids)} for ln in lines]


def hold_json(hold: Hold) -> dict[str, Any]:
    return {"id": hold.id, "event_id": hold.event_id, "user_id": hold.user_id, "quantity": hold.quantity,
            "allocations": dict(hold.allocations), "expires_at": hold.expires_at.isoformat(),
            "status": hold.status.value} | ({"lines": lines_json(hold.lines)} if hold.lines else {})
