"""Selling tickets: `boxoffice buy`, `hold`, `confirm`, `unhold`, `cancel`, `release`, `sale`, and
`waitlist join|leave`."""

from __future__ import annotations

import secrets

import typer

from boxoffice.api.schemas import EventOut, HoldOut, OrderOut, WaitlistLeft, WaitlistOut
from boxoffice.cli.output import JsonOpt, client, emit, exit_on_error, money
from boxoffice.domain import errors
from boxoffice.services.cancellations import cancel_order
from boxoffice.services.holds import confirm_hold, hold_tickets, release_hold
from boxoffice.services.purchasing import purchase_tickets
from boxoffice.services.releases import release_tickets, set_sale_status
from boxoffice.services.waitlist import join_waitlist, leave_waitlist

waitlist_app = typer.Typer(help="Wait for a sold-out event.", no_args_is_help=True)


def buy(
    event_id: str,
    user: str = typer.Option(..., "--user", help="Buyer's user id."),
    quantity: int | None = typer.Option(None, "--quantity", "-q", help="Number of tickets (default 1, or what "
                                        "--type / --seat add up to)."),
    key: str | None = typer.Option(None, "--key", help="Idempotency key; reuse it to retry safely (default: random)."),
    type_: list[str] | None = typer.Option(None, "--type", help="TYPE=N: N tickets of a ticket type (repeatable); "
                                           "seated types get the best seats available together."),
    seat: list[str] | None = typer.Option(None, "--seat", help="A specific seat, section:row:number (repeatable)."),
    as_json: bool = JsonOpt,
) -> None:
    """Buy tickets. Retrying with the same --key returns the first order instead of buying twice."""
    idem = key or secrets.token_hex(8)
    with exit_on_error(as_json):
        types = _type_quantities(type_ or [])
        default = None if types or seat else 1
        result = purchase_tickets(client(), event_id, user, quantity if quantity is not None else default, idem,
                                  types=types or None, seats=seat or None)
    order = result.order
    note = " (replayed: this key already bought it)" if result.replayed else ""
    seats = [s for line in order.lines for s in line.seat_ids]
    emit(as_json, {"ok": True, "replayed": result.replayed, "order": OrderOut.of(order)},
         f"order [bold]{order.id}[/bold]: {order.quantity} ticket(s), {money(order.amount, order.currency)}{note}"
         + (f", seats {', '.join(seats)}" if seats else ""))


def _type_quantities(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        name, _, n = item.partition("=")
        if not name or not n.isdigit():
            raise errors.InvalidQuantity(f"--type takes TYPE=N, e.g. --type stalls=2; got {item!r}")
        out[name] = out.get(name, 0) + int(n)
    return out


def hold(
    event_id: str,
    user: str = typer.Option(..., "--user", help="User id."),
    quantity: int | None = typer.Option(None, "--quantity", "-q", help="Number of tickets (default 1, or what "
                                        "--type / --seat add up to)."),
    key: str | None = typer.Option(None, "--key", help="Idempotency key (default: random)."),
    ttl: float | None = typer.Option(None, "--ttl", help="Hold time in seconds (default: the event's hold_minutes)."),
    type_: list[str] | None = typer.Option(None, "--type", help="TYPE=N: N tickets of a ticket type (repeatable); "
                                           "seated types get the best seats available together."),
    seat: list[str] | None = typer.Option(None, "--seat", help="A specific seat, section:row:number (repeatable)."),
    as_json: bool = JsonOpt,
) -> None:
    """Hold tickets (or seats) in a cart until they expire; `boxoffice confirm HOLD` buys them."""
    with exit_on_error(as_json):
        types = _type_quantities(type_ or [])
        default = None if types or seat else 1
        h = hold_tickets(client(), event_id, user, quantity if quantity is not None else default,
                         key or secrets.token_hex(8), ttl_s=ttl, types=types or None, seats=seat or None)
    seats = ", seats " + ", ".join(h.seat_ids) if h.seat_ids else ""
    emit(as_json, {"ok": True, "hold": HoldOut.of(h)},
         f"hold [bold]{h.id}[/bold]: {h.quantity} ticket(s){seats} until {h.expires_at.isoformat()}")


def confirm(hold_id: str, user: str = typer.Option(..., "--user"), as_json: bool = JsonOpt) -> None:
    """Turn a live hold into an order (confirming twice returns the same order)."""
    with exit_on_error(as_json):
        result = confirm_hold(client(), hold_id, user)
    o = result.order
    emit(as_json, {"ok": True, "replayed": result.replayed, "order": OrderOut.of(o)},
         f"order [bold]{o.id}[/bold]: {o.quantity} ticket(s), {money(o.amount, o.currency)}")


def unhold(hold_id: str, user: str = typer.Option(..., "--user"), as_json: bool = JsonOpt) -> None:
    """Give up a hold: its tickets go back on sale now."""
    with exit_on_error(as_json):
        h = release_hold(client(), hold_id, user)
    emit(as_json, {"ok": True, "hold": HoldOut.of(h)}, f"hold {h.id} is {h.status.value}")


def cancel(
    order_id: str,
    user: str = typer.Option("", "--user", help="The buyer (not needed with --organiser)."),
    ticket: list[str] = typer.Option(None, "--ticket", help="Cancel only these tickets (repeatable)."),
    type_: list[str] | None = typer.Option(None, "--type", help="TYPE=N: cancel N tickets of a ticket type "
                                           "(repeatable; an order with ticket types)."),
    organiser: bool = typer.Option(False, "--organiser", help="Cancel as the organiser (any order)."),
    as_json: bool = JsonOpt,
) -> None:
    """Cancel an order or some of its tickets; a refund is recorded. Cancelling twice is harmless."""
    with exit_on_error(as_json):
        types = _type_quantities(type_ or []) or None
        o = cancel_order(client(), order_id, user, ticket_ids=ticket or None, types=types, by_organiser=organiser)
    emit(as_json, {"ok": True, "order": OrderOut.of(o)},
         f"order {o.id}: {o.status.value}, {o.cancelled_quantity} of {o.quantity} cancelled")


def release(event_id: str, quantity: int = typer.Option(..., "--quantity", "-q"),
            type_: str | None = typer.Option(None, "--type", help="The ticket type to release (an event with "
                                             "ticket types; not a seated one)."),
            as_json: bool = JsonOpt) -> None:
    """Add tickets to a running sale (reopens a sold-out event)."""
    db = client()
    with exit_on_error(as_json):
        ev = release_tickets(db, event_id, quantity, type_id=type_)
    emit(as_json, {"ok": True, "event": EventOut.counted(db, ev)},
         f"released {quantity}: capacity {ev.capacity}, {ev.shard_count} shards")


SALE_ACTIONS = {"pause": "paused", "resume": "on_sale", "close": "closed"}


def sale(event_id: str, action: str = typer.Argument(..., help="pause | resume | close"),
         as_json: bool = JsonOpt) -> None:
    """Pause, resume or close an event's sale."""
    with exit_on_error(as_json):
        status = SALE_ACTIONS.get(action)
        if status is None:
            raise errors.InvalidRequest(f"action must be pause, resume or close, got {action!r}")
        db = client()
        ev = set_sale_status(db, event_id, status)
    emit(as_json, {"ok": True, "event": EventOut.counted(db, ev)}, f"event {ev.id} is {ev.status.value}")


@waitlist_app.command("join")
def waitlist_join(event_id: str, user: str = typer.Option(..., "--user"),
                  type_: str | None = typer.Option(None, "--type", help="The ticket type to wait for (required "
                                                   "for an event with ticket types)."),
                  as_json: bool = JsonOpt) -> None:
    """Join the waitlist of a sold-out event (or type): you get an offer when tickets come back."""
    with exit_on_error(as_json):
        e = join_waitlist(client(), event_id, user, type_)
    emit(as_json, {"ok": True} | WaitlistOut.of(e).model_dump(mode="json"),
         f"{e.user_id} is {e.status} (position {e.position})")


@waitlist_app.command("leave")
def waitlist_leave(event_id: str, user: str = typer.Option(..., "--user"), as_json: bool = JsonOpt) -> None:
    """Leave the waitlist (an unknown event exits 3, as the API answers 404)."""
    with exit_on_error(as_json):
        was = leave_waitlist(client(), event_id, user)
    emit(as_json, {"ok": True} | WaitlistLeft(event_id=event_id, user_id=user, was_waiting=was).model_dump(mode="json"),
         "left the waitlist" if was else "was not on the waitlist")
