"""`boxoffice`: one command for people and scripts.

Every command takes ``--json`` for machine-readable output. Exit codes:

    0  done
    1  unexpected failure (a bug: please report it)
    2  bad input (usage, invalid quantity, bad event data)
    3  not found (unknown event or order)
    4  refused by a rule: sold out, not enough tickets, per-user limit, not on sale,
       idempotency key reused with other parameters
    5  could not finish in time because of load (retry with the same idempotency key)
    6  the local emulators are missing or would not start
    7  (simulate, bench) the run finished but its audit or targets failed
"""

from __future__ import annotations

import json
import secrets
import sys
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from boxoffice.api import cli as api_cli
from boxoffice.domain import errors
from boxoffice.domain.model import Event, InventoryShard, Order
from boxoffice.loadtest import cli as loadtest_cli
from boxoffice.messaging import cli as messaging_cli
from boxoffice.runtime.dev_cli import app as dev_app
from boxoffice.runtime.worker_cli import worker_app

app = typer.Typer(
    help="boxoffice: event ticketing on Firestore and Pub/Sub.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
events_app = typer.Typer(help="Create, list and show events.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(events_app, name="events")
app.add_typer(worker_app, name="worker")
app.command("simulate")(loadtest_cli.simulate)
app.command("bench")(loadtest_cli.bench)
messaging_cli.register(app)
app.command("serve")(api_cli.serve)
app.command("mint-tokens")(api_cli.mint_tokens)

out = Console()
err = Console(stderr=True)
JsonOpt = typer.Option(False, "--json", help="Machine-readable output on stdout.")

EXIT_BUG, EXIT_INPUT, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_BUSY, EXIT_NO_EMULATOR = 1, 2, 3, 4, 5, 6


def exit_code_for(exc: errors.BoxofficeError) -> int:
    if isinstance(exc, errors.InvalidRequest):
        return EXIT_INPUT
    if isinstance(exc, errors.NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, errors.ContentionTimeout):
        return EXIT_BUSY
    return EXIT_REFUSED


def fail(exc: errors.BoxofficeError, as_json: bool) -> NoReturn:
    code = exit_code_for(exc)
    if as_json:
        print(json.dumps({"ok": False, "error": exc.code, "message": exc.message}))
    else:
        err.print(f"[red]error[/red] ({exc.code}): {exc.message}")
    raise typer.Exit(code)


def emit(as_json: bool, payload: dict[str, Any], human: Any) -> None:
    if as_json:
        print(json.dumps(payload, default=str))
    else:
        out.print(human)


def client() -> Any:
    """A Firestore client: the emulator named in the environment or the `dev up` stack, else production."""
    import os

    from google.cloud import firestore

    from boxoffice.runtime import emulators as em

    if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
        recorded = em.recorded_stack()
        if recorded is not None:
            return em.firestore_client(recorded)
        if not os.environ.get("GOOGLE_CLOUD_PROJECT"):
            err.print(
                "No emulator found: run `boxoffice dev up` first (or set FIRESTORE_EMULATOR_HOST, "
                "or GOOGLE_CLOUD_PROJECT to use a real project)."
            )
            raise typer.Exit(EXIT_NO_EMULATOR)
    return firestore.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "demo-boxoffice"))


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
    }


def money(amount: int, currency: str) -> str:
    return f"{amount / 100:.2f} {currency}"


@events_app.command("create")
def events_create(
    name: str = typer.Option(..., help="Event name."),
    venue: str = typer.Option(..., help="Venue."),
    starts_at: datetime = typer.Option(..., help="Start time, ISO 8601 with a time zone, e.g. 2026-12-31T20:00:00+01:00.",
                                       formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"]),
    price: int = typer.Option(..., help="Ticket price in minor units (cents)."),
    currency: str = typer.Option("EUR", help="ISO 4217 currency code."),
    capacity: int = typer.Option(..., help="Number of tickets."),
    per_order_max: int = typer.Option(10, help="Most tickets in one order."),
    per_user_limit: int | None = typer.Option(None, help="Most tickets one user may hold (default: per-order max)."),
    shards: int | None = typer.Option(None, help="Inventory shards (default: about 10 tickets a shard, at most 200)."),
    hold_minutes: int = typer.Option(10, help="How long a hold (cart) keeps tickets."),
    low_stock: int | None = typer.Option(None, help="Low-stock threshold (default: 10% of capacity)."),
    as_json: bool = JsonOpt,
) -> None:
    """Create an event and its inventory, on sale at once."""
    from boxoffice.services.events import create_event

    try:
        event = create_event(
            client(), name=name, venue=venue, starts_at=starts_at, price=price, currency=currency,
            capacity=capacity, per_order_max=per_order_max, per_user_limit=per_user_limit,
            shard_count=shards, hold_minutes=hold_minutes, low_stock_threshold=low_stock,
        )
    except errors.BoxofficeError as exc:
        fail(exc, as_json)
    emit(as_json, event_json(event), f"created event [bold]{event.id}[/bold] ({event.capacity} tickets, {event.shard_count} shards)")


@events_app.command("list")
def events_list(
    limit: int = typer.Option(20, min=1, max=100, help="Page size."),
    after: str | None = typer.Option(None, help="Cursor: the last event id of the previous page."),
    as_json: bool = JsonOpt,
) -> None:
    """List events by start time."""
    from boxoffice.services.events import list_events

    try:
        rows = list_events(client(), limit=limit, start_after=after)
    except errors.BoxofficeError as exc:
        fail(exc, as_json)
    next_cursor = rows[-1][0].id if len(rows) == limit else None
    table = Table("id", "name", "starts", "price", "available", "state")
    for event, summary in rows:
        table.add_row(event.id, event.name, event.starts_at.isoformat(), money(event.price, event.currency),
                      f"{summary.get('available', '?')}/{event.capacity}", str(summary.get("state", event.status.value)))
    emit(as_json, {"events": [event_json(e, s) for e, s in rows], "next": next_cursor}, table)


def _show_event(event: Event, summary: dict[str, Any], shards: list[InventoryShard]) -> Table:
    table = Table(title=f"{event.name} ({event.id})", show_header=False, title_justify="left")
    table.add_row("venue", event.venue)
    table.add_row("starts", event.starts_at.isoformat())
    table.add_row("price", money(event.price, event.currency))
    table.add_row("sale", event.status.value)
    table.add_row("limits", f"{event.per_order_max} per order, {event.per_user_limit} per user")
    table.add_row("summary", f"{summary.get('available', '?')} available, {summary.get('held', 0)} held, "
                  f"{summary.get('sold', 0)} sold of {event.capacity} ({summary.get('state', '?')})")
    table.add_row("shards", f"{len(shards)}: {sum(s.available for s in shards)} available, "
                  f"{sum(s.held for s in shards)} held, {sum(s.sold for s in shards)} sold (authoritative)")
    return table


@events_app.command("show")
def events_show(event_id: str, as_json: bool = JsonOpt,
                watch: bool = typer.Option(False, "--watch", help="Follow the live summary until Ctrl-C.")) -> None:
    """Show an event, its availability summary and the authoritative shard totals."""
    from boxoffice.services.events import get_event, inventory

    db = client()
    try:
        event, summary = get_event(db, event_id)
        shards = inventory(db, event_id)
    except errors.BoxofficeError as exc:
        fail(exc, as_json)
    payload = event_json(event, summary) | {
        "inventory": {
            "available": sum(s.available for s in shards),
            "held": sum(s.held for s in shards),
            "sold": sum(s.sold for s in shards),
            "shards": len(shards),
        }
    }
    emit(as_json, payload, _show_event(event, summary, shards))
    if watch:
        from boxoffice.inventory_cli import watch_summary

        watch_summary(db, event_id, as_json, out)


@app.command("buy")
def buy(
    event_id: str,
    user: str = typer.Option(..., "--user", help="Buyer's user id."),
    quantity: int = typer.Option(1, "--quantity", "-q", help="Number of tickets."),
    key: str | None = typer.Option(None, "--key", help="Idempotency key; reuse it to retry safely (default: random)."),
    as_json: bool = JsonOpt,
) -> None:
    """Buy tickets. Retrying with the same --key returns the first order instead of buying twice."""
    from boxoffice.services.purchasing import purchase_tickets

    idem = key or secrets.token_hex(8)
    try:
        result = purchase_tickets(client(), event_id, user, quantity, idem)
    except errors.BoxofficeError as exc:
        fail(exc, as_json)
    order = result.order
    note = " (replayed: this key already bought it)" if result.replayed else ""
    emit(as_json, {"ok": True, "replayed": result.replayed, "order": order_json(order)},
         f"order [bold]{order.id}[/bold]: {order.quantity} ticket(s), {money(order.amount, order.currency)}{note}")


from boxoffice.inventory_cli import register as _register_inventory  # noqa: E402

_register_inventory(app, events_app)


def main() -> None:  # pragma: no cover - console entry point
    from boxoffice.runtime.emulators import EmulatorNotFound, EmulatorStartError

    try:
        app()
    except (EmulatorNotFound, EmulatorStartError) as exc:
        err.print(f"[red]emulators unavailable[/red]: {exc}")
        sys.exit(EXIT_NO_EMULATOR)
    except Exception as exc:  # noqa: BLE001 - last line of defence: say what broke, exit 1
        err.print(f"[red]unexpected error[/red]: {type(exc).__name__}: {exc}")
        sys.exit(EXIT_BUG)


if __name__ == "__main__":  # pragma: no cover
    main()
