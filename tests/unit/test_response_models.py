"""The response models that the API returns and `boxoffice ... --json` prints (no database).

tests/e2e/test_cli_api_shapes.py shows, on the emulators, that both give the same document for
the same event, order and hold; these pin the two pieces it rests on.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from boxoffice.api.schemas import Availability, EventOut, OrderOut
from boxoffice.cli.output import emit
from boxoffice.domain.availability import compute_summary
from boxoffice.domain.model import Order, OrderLine, initial_shards, new_event
from boxoffice.domain.seating import seat_map_from_json
from boxoffice.domain.ticket_types import type_specs_from_json

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def theatre():
    specs, pools = type_specs_from_json(json.loads((EXAMPLES / "theatre-types.json").read_text()),
                                        currency="EUR", per_order_max=6)
    return new_event(event_id="ev_t", name="Play", venue="Theatre", price=None, currency="EUR", capacity=None,
                     starts_at=datetime.now(UTC) + timedelta(days=30), per_order_max=6, types=specs, pools=pools,
                     seat_map=seat_map_from_json(json.loads((EXAMPLES / "theatre-seats.json").read_text())))


async def _get(app: FastAPI, *paths: str) -> dict[str, Any]:
    """What the app sends for each path (in process, over ASGI)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        return {p: (await http.get(f"/{p}")).json() for p in paths}


def test_a_just_created_event_shows_what_counting_its_new_shards_shows_per_type_too():
    event = theatre()
    unsold = Availability.unsold(event)
    counted = compute_summary(initial_shards(event), event.status, event.low_stock_threshold, event.catalogue)
    assert unsold == Availability.counted(counted) and unsold.live
    assert (unsold.available, unsold.sold, unsold.capacity) == (event.capacity, 0, event.capacity)
    assert unsold.types is not None and unsold.types["circle"] == {"available": 30, "held": 0, "sold": 0, "capacity": 30}


def test_the_cli_prints_a_response_model_exactly_as_the_api_sends_it(capsys):
    event = theatre()
    order = Order(id="o_1", event_id=event.id, user_id="ann", quantity=3, unit_price=0, currency="EUR",
                  allocations={"stalls.s000": 2, "standing.s000": 1}, idempotency_key="k1",
                  ticket_ids=("o_1-t00", "o_1-t01", "o_1-t02"), created_at=datetime(2030, 1, 2, 3, 4, 5, 678901, UTC),
                  lines=(OrderLine(type_id="stalls", quantity=2, unit_price=4500, currency="EUR",
                                   seat_ids=("stalls:A:9", "stalls:A:10")),
                         OrderLine(type_id="standing", quantity=1, unit_price=2000, currency="EUR")))
    api = FastAPI()
    api.get("/event", response_model=EventOut)(lambda: EventOut.of(event, Availability.unsold(event)))
    api.get("/order", response_model=OrderOut)(lambda: OrderOut.of(order))
    sent = asyncio.run(_get(api, "event", "order"))

    emit(True, {"ok": True, "event": EventOut.of(event, Availability.unsold(event)), "order": OrderOut.of(order)}, "")
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"ok": True} | sent
    assert "allocations" not in printed["order"] and printed["order"]["lines"][0]["seat_ids"] == ["stalls:A:9", "stalls:A:10"]
