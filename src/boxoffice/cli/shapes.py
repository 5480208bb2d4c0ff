"""The ``--json`` shapes of events, orders and holds: the HTTP API's response schemas
(api/schemas.py), so a script sees the same fields from `boxoffice ... --json` and from the API."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from boxoffice.api.schemas import Availability, EventOut, HoldOut, OrderOut, summary_availability
from boxoffice.domain.model import Event, Hold, InventoryShard, Order


def live_availability(shards: Iterable[InventoryShard]) -> Availability:
    """Counted from the inventory shards (as the API's GET /v1/events/{id})."""
    shards = list(shards)
    return Availability(available=sum(s.available for s in shards), held=sum(s.held for s in shards),
                        sold=sum(s.sold for s in shards), capacity=sum(s.capacity for s in shards), live=True)


def new_event_availability(event: Event) -> Availability:
    """A just-created event: every ticket available (as the API's POST /v1/events)."""
    return Availability(available=event.capacity, held=0, sold=0, capacity=event.capacity, live=True)


def event_json(event: Event, availability: Availability) -> dict[str, Any]:
    return EventOut.of(event, availability).model_dump(mode="json")


def summary_event_json(event: Event, summary: dict[str, Any]) -> dict[str, Any]:
    """An event with its display summary's availability (as the API's event list)."""
    return event_json(event, summary_availability(event, summary))


def order_json(order: Order) -> dict[str, Any]:
    return OrderOut.of(order).model_dump(mode="json")


def hold_json(hold: Hold) -> dict[str, Any]:
    return HoldOut.of(hold).model_dump(mode="json")
