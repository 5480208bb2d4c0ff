"""`boxoffice events ...` (create, list, show, reconcile) and `boxoffice triggers failures`."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from boxoffice.api.schemas import Availability, EventOut, EventPage
from boxoffice.cli.output import JsonOpt, client, emit, exit_on_error, money, out
from boxoffice.domain.availability import Summary
from boxoffice.domain.errors import InvalidRequest
from boxoffice.domain.model import Event
from boxoffice.services.events import create_event, get_event, list_events, live_counts
from boxoffice.store.documents import event_ref
from boxoffice.triggers.inventory import list_failures, reconcile_event

events_app = typer.Typer(help="Create, list and show events.", no_args_is_help=True)
triggers_app = typer.Typer(help="Inventory trigger operations.", no_args_is_help=True)


@events_app.command("create")
def events_create(
    name: str = typer.Option(..., help="Event name."),
    venue: str = typer.Option(..., help="Venue."),
    starts_at: datetime = typer.Option(..., help="Start time, ISO 8601 with a time zone, e.g. 2026-12-31T20:00:00+01:00.",
                                       formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"]),
    price: int | None = typer.Option(None, help="Ticket price in minor units (cents); required without --types."),
    currency: str = typer.Option("EUR", help="ISO 4217 currency code."),
    capacity: int | None = typer.Option(None, help="Number of tickets; required without --types."),
    per_order_max: int = typer.Option(10, help="Most tickets in one order."),
    per_user_limit: int | None = typer.Option(None, help="Most tickets one user may hold (default: per-order max)."),
    shards: int | None = typer.Option(None, help="Inventory shards (default: about 10 tickets a shard, at most 200)."),
    hold_minutes: int = typer.Option(10, help="How long a hold (cart) keeps tickets."),
    low_stock: int | None = typer.Option(None, help="Low-stock threshold (default: 10% of capacity)."),
    types: Path | None = typer.Option(None, "--types", exists=True, dir_okay=False,
                                      help='JSON file of ticket types and shared pools: {"types": [...], "pools": [...]} '
                                           "(docs/parts/ticketing.md)."),
    seats: Path | None = typer.Option(None, "--seats", exists=True, dir_okay=False,
                                      help='JSON file of a seat map: {"sections": [...], "blocked": [...]} (needs --types).'),
    as_json: bool = JsonOpt,
) -> None:
    """Create an event and its inventory, on sale at once."""
    with exit_on_error(as_json):
        event = create_event(
            client(), name=name, venue=venue, starts_at=starts_at, price=price, currency=currency,
            capacity=capacity, per_order_max=per_order_max, per_user_limit=per_user_limit,
            shard_count=shards, hold_minutes=hold_minutes, low_stock_threshold=low_stock,
            types=_json_file(types, "--types"), seats=_json_file(seats, "--seats"),
        )
    emit(as_json, EventOut.of(event, Availability.unsold(event)),
         f"created event [bold]{event.id}[/bold] ({event.capacity} tickets, {event.shard_count} shards)")


def _json_file(path: Path | None, option: str) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"{option} {path}: not a readable JSON file ({exc})") from None


@events_app.command("list")
def events_list(
    limit: int = typer.Option(20, min=1, max=100, help="Page size."),
    after: str | None = typer.Option(None, help="Cursor: the last event id of the previous page."),
    as_json: bool = JsonOpt,
) -> None:
    """List events by start time."""
    with exit_on_error(as_json):
        rows = list_events(client(), limit=limit, start_after=after)
    table = Table("id", "name", "starts", "price", "available", "state")
    for event, summary in rows:
        table.add_row(event.id, event.name, event.starts_at.isoformat(), money(event.price, event.currency),
                      f"{summary.get('available', '?')}/{event.capacity}", str(summary.get("state", event.status.value)))
    emit(as_json, EventPage.of(rows, limit), table)


def _show_event(event: Event, summary: dict[str, Any], counts: Summary) -> Table:
    table = Table(title=f"{event.name} ({event.id})", show_header=False, title_justify="left")
    table.add_row("venue", event.venue)
    table.add_row("starts", event.starts_at.isoformat())
    table.add_row("price", money(event.price, event.currency))
    table.add_row("sale", event.status.value)
    table.add_row("limits", f"{event.per_order_max} per order, {event.per_user_limit} per user")
    table.add_row("summary", f"{summary.get('available', '?')} available, {summary.get('held', 0)} held, "
                  f"{summary.get('sold', 0)} sold of {event.capacity} ({summary.get('state', '?')})")
    table.add_row("shards", f"{counts.shards}: {counts.available} available, "
                  f"{counts.held} held, {counts.sold} sold (authoritative)")
    for t in event.catalogue.types if event.catalogue is not None else ():
        c = counts.types[t.id]
        table.add_row(f"type {t.id}", f"{t.name}, {money(t.price, t.currency)}: {c['available']} available, "
                      f"{c['sold']} sold of {c['capacity']}{' (seated)' if t.seated else ''}")
    return table


@events_app.command("show")
def events_show(event_id: str, as_json: bool = JsonOpt,
                watch: bool = typer.Option(False, "--watch", help="Follow the live summary until Ctrl-C.")) -> None:
    """Show an event, its availability summary and the authoritative shard totals."""
    db = client()
    with exit_on_error(as_json):
        event, summary = get_event(db, event_id)
        counts = live_counts(db, event)
    # --json: the event as the API shows it to its organiser (availability counted from the shards),
    # plus, for the operator, the display summary as stored (what buyers see) and the shard count.
    payload = EventOut.of(event, Availability.counted(counts)).model_dump(mode="json") | {
        "summary": summary, "shards": counts.shards}
    emit(as_json, payload, _show_event(event, summary, counts))
    if watch:
        watch_summary(db, event_id, as_json)


@events_app.command("reconcile")
def reconcile(event_id: str, as_json: bool = JsonOpt) -> None:
    """Recompute an event's summary from its shards and resolve its dead-lettered changes."""
    with exit_on_error(as_json):
        outcome = reconcile_event(client(), event_id)
    s = dict(outcome.summary or {})
    emit(as_json, {"ok": True, "summary": s}, "summary: " + _summary_line(s))


@triggers_app.command("failures")
def failures(all_: bool = typer.Option(False, "--all", help="Include resolved ones."),
             as_json: bool = JsonOpt) -> None:
    """List dead-lettered inventory changes (repair with `boxoffice events reconcile EVENT`)."""
    rows = list_failures(client(), include_resolved=all_)
    table = Table("change", "event", "shard", "failed at", "attempts", "resolved", "error")
    for r in rows:
        table.add_row(r["change_id"], r["event_id"], r["shard_id"], str(r.get("failed_at")),
                      str(r.get("attempts")), str(r.get("resolved")), r.get("error", "")[:80])
    emit(as_json, {"failures": [{k: v for k, v in r.items() if k != "traceback"} for r in rows]}, table)


def _summary_line(summary: dict[str, Any]) -> str:
    return (f"{summary.get('available', '?')} available, {summary.get('held', 0)} held, {summary.get('sold', 0)} sold"
            f" of {summary.get('capacity', '?')} ({summary.get('state', '?')})")


def watch_summary(db: Any, event_id: str, as_json: bool) -> None:
    """Print the event's summary each time it changes, until Ctrl-C (a Firestore listener)."""
    done = threading.Event()

    def on_change(docs: Any, changes: Any, read_time: Any) -> None:
        for doc in docs:
            s = (doc.to_dict() or {}).get("summary") or {}
            if as_json:
                print(json.dumps({"event_id": event_id, "summary": s}, default=str), flush=True)
            else:
                out.print(f"{read_time.isoformat(timespec='milliseconds')}  {_summary_line(s)}")

    watch = event_ref(db, event_id).on_snapshot(on_change)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        watch.unsubscribe()
