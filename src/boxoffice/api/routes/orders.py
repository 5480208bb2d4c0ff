"""A buyer's own orders. Someone else's order is answered exactly like a missing one (404)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from boxoffice.api.deps import Db, SignedIn
from boxoffice.api.problems import responses
from boxoffice.api.schemas import ID_PATTERN, MAX_PAGE, OrderDetail, OrderOut, OrderPage, TicketOut
from boxoffice.services import orders as service

router = APIRouter(prefix="/v1/orders", tags=["orders"])
OrderId = Annotated[str, Path(pattern=ID_PATTERN)]


@router.get("", response_model=OrderPage, responses=responses(401, 404, 422))
def list_my_orders(
    caller: SignedIn,
    db: Db,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    after: Annotated[str | None, Query(pattern=ID_PATTERN, description="Cursor from `next`.")] = None,
) -> OrderPage:
    """The signed-in user's orders, newest first."""
    orders = service.list_orders_for_user(db, caller.uid, limit=limit, start_after=after)
    return OrderPage(orders=[OrderOut.of(o) for o in orders],
                     next=orders[-1].id if len(orders) == limit else None)


@router.get("/{order_id}", response_model=OrderDetail, responses=responses(401, 404, 422))
def show_order(order_id: OrderId, caller: SignedIn, db: Db) -> OrderDetail:
    """One of the signed-in user's orders, with its tickets and their codes."""
    order = service.get_order(db, order_id, caller.uid)
    tickets = service.tickets_of(db, order)
    return OrderDetail(**OrderOut.of(order).model_dump(), created_at=order.created_at,
                       tickets=[TicketOut.of(t) for t in tickets])
