"""A buyer's own orders, and cancelling them. Someone else's order is answered exactly like a
missing one (404); only the organiser of the order's event may cancel it besides its buyer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query

from boxoffice.api.deps import Db, SignedIn
from boxoffice.api.problems import responses
from boxoffice.api.schemas import ID_PATTERN, MAX_PAGE, CancelIn, OrderDetail, OrderOut, OrderPage, TicketOut
from boxoffice.services import orders as service
from boxoffice.services.cancellations import cancel_order_as

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


@router.post("/{order_id}/cancel", response_model=OrderOut,
             responses=responses(401, 404, 413, 422, 503))
def cancel_order(
    order_id: OrderId,
    caller: SignedIn,
    db: Db,
    body: Annotated[CancelIn | None, Body()] = None,
) -> OrderOut:
    """Cancel a whole order, or some of its tickets (`ticket_ids`, or `types`: how many of each
    ticket type); returns the order after it.

    The buyer cancels their own orders; the organiser of the event may cancel any order of it
    (the refund record then says `by_organiser`). The tickets go back on sale at once. Tickets
    already cancelled are skipped, so cancelling twice is harmless. A ticket id that is not part
    of the order, a type it has no tickets of, or more of a type than are still valid is a 422.
    A cancelled seat is free again within about a second (the allocator frees it).
    """
    order = cancel_order_as(db, order_id, caller.uid, caller_is_organiser=caller.organiser,
                            ticket_ids=body.ticket_ids if body is not None else None,
                            types=body.types if body is not None else None)
    return OrderOut.of(order)
