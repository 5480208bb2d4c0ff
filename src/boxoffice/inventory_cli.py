"""CLI commands of real-time inventory: hold, confirm, cancel, release, sale, waitlist, worker,
triggers failures, events reconcile, and the live summary (`events show --watch`).

Registered into the main app by ``register(app, events_app)``; exit codes as in cli.py.
"""

from __future__ import annotations

import json
import secrets
import threading
from typing import Any

import typer

from boxoffice.domain import errors
from boxoffice.domain.model import Hold


def _cli() -> Any:
    from boxoffice import cli  # late: cli imports this module to register it

    return cli


def hold_json(hold: Hold) -> dict[str, Any]:
    return {"id": hold.id, "event_id": hold.event_id, "user_id": hold.user_id, "quantity": hold.quantity,
            "allocations": dict(hold.allocations), "expires_at": hold.expires_at.isoformat(),
            "status": hold.status.value}


def _summary_line(summary: dict[str, Any]) -> str:
    return (f"{summary.get('available', '?')} available, {summary.get('held', 0)} held, {summary.get('sold', 0)} sold"
            f" of {summary.get('capacity', '?')} ({summary.get('state', '?')})")


def register(app: typer.Typer, events_app: typer.Typer) -> None:
    c = _cli()
    JsonOpt = c.JsonOpt

    @app.command("hold")
    def hold(
        event_id: str,
        user: str = typer.Option(..., "--user", help="User id."),
        quantity: int = typer.Option(1, "--quantity", "-q"),
        key: str | None = typer.Option(None, "--key", help="Idempotency key (default: random)."),
        ttl: float | None = typer.Option(None, "--ttl", help="Hold time in seconds (default: the event's hold_minutes)."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Hold tickets in a cart until they expire; `boxoffice confirm HOLD` buys them."""
        from boxoffice.services.holds import hold_tickets

        try:
            h = hold_tickets(c.client(), event_id, user, quantity, key or secrets.token_hex(8), ttl_s=ttl)
        except errors.BoxofficeError as exc:
            c.fail(exc, as_json)
        c.emit(as_json, {"ok": True, "hold": hold_json(h)},
               f"hold [bold]{h.id}[/bold]: {h.quantity} ticket(s) until {h.expires_at.isoformat()}")

    @app.command("confirm")
    def confirm(hold_id: str, user: str = typer.Option(..., "--user"), as_json: bool = JsonOpt) -> None:
        """Turn a live hold into an order (confirming twice returns the same order)."""
        from boxoffice.services.holds import confirm_hold

        try:
            result = confirm_hold(c.client(), hold_id, user)
        except errors.BoxofficeError as exc:
            c.fail(exc, as_json)
        o = result.order
        c.emit(as_json, {"ok": True, "replayed": result.replayed, "order": c.order_json(o)},
               f"order [bold]{o.id}[/bold]: {o.quantity} ticket(s), {c.money(o.amount, o.currency)}")

    @app.command("unhold")
    def unhold(hold_id: str, user: str = typer.Option(..., "--user"), as_json: bool = JsonOpt) -> None:
        """Give up a hold: its tickets go back on sale now."""
        from boxoffice.services.holds import release_hold

        try:
            h = release_hold(c.client(), hold_id, user)
        except errors.BoxofficeError as exc:
            c.fail(exc, as_json)
        c.emit(as_json, {"ok": True, "hold": hold_json(h)}, f"hold {h.id} is {h.status.value}")

    @app.command("cancel")
    def cancel(
        order_id: str,
        user: str = typer.Option("", "--user", help="The buyer (not needed with --organiser)."),
        ticket: list[str] = typer.Option(None, "--ticket", help="Cancel only these tickets (repeatable)."),
        organiser: bool = typer.Option(False, "--organiser", help="Cancel as the organiser (any order)."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Cancel an order or some of its tickets; a refund is recorded. Cancelling twice is harmless."""
        from boxoffice.services.cancellations import cancel_order

        try:
            o = cancel_order(c.client(), order_id, user, ticket_ids=ticket or None, by_organiser=organiser)
        except errors.BoxofficeError as exc:
            c.fail(exc, as_json)
        c.emit(as_json, {"ok": True, "order": c.order_json(o) | {"cancelled_quantity": o.cancelled_quantity}},
               f"order {o.id}: {o.status.value}, {o.cancelled_quantity} of {o.quantity} cancelled")

    @app.command("release")
    def release(event_id: str, quantity: int = typer.Option(..., "--quantity", "-q"), as_json: bool = JsonOpt) -> None:
        """Add tickets to a running sale (reopens a sold-out event)."""
        from boxoffice.services.releases import release_tickets

        try:
            ev = release_tickets(c.client(), event_id, quantity)
        except errors.BoxofficeError as exc:
            c.fail(exc, as_json)
        c.emit(as_json, {"ok": True, "event": c.event_json(ev)},
               f"released {quantity}: capacity {ev.capacity}, {ev.shard_count} shards")

    @app.command("sale")
    def sale(event_id: str, action: str = typer.Argument(..., help="pause | resume | close"),
             as_json: bool = JsonOpt) -> None:
        """Pause, resume or close an event's sale."""
        from boxoffice.services.releases import set_sale_status

        status = {"pause": "paused", "resume": "on_sale", "close": "closed"}.get(action)
        try:
            if status is None:
                raise errors.InvalidRequest(f"action must be pause, resume or close, got {action!r}")
            ev = set_sale_status(c.client(), event_id, status)
        except errors.BoxofficeError as exc:
            c.fail(exc, as_json)
        c.emit(as_json, {"ok": True, "event": c.event_json(ev)}, f"event {ev.id} is {ev.status.value}")

    waitlist_app = typer.Typer(help="Wait for a sold-out event.", no_args_is_help=True)
    app.add_typer(waitlist_app, name="waitlist")

    @waitlist_app.command("join")
    def waitlist_join(event_id: str, user: str = typer.Option(..., "--user"), as_json: bool = JsonOpt) -> None:
        """Join the waitlist of a sold-out event: you get an offer when tickets come back."""
        from boxoffice.services.waitlist import join_waitlist

        try:
            e = join_waitlist(c.client(), event_id, user)
        except errors.BoxofficeError as exc:
            c.fail(exc, as_json)
        c.emit(as_json, {"ok": True, "event_id": e.event_id, "user_id": e.user_id, "status": e.status,
                         "position": e.position}, f"{e.user_id} is {e.status} (position {e.position})")

    @waitlist_app.command("leave")
    def waitlist_leave(event_id: str, user: str = typer.Option(..., "--user"), as_json: bool = JsonOpt) -> None:
        """Leave the waitlist."""
        from boxoffice.services.waitlist import leave_waitlist

        was = leave_waitlist(c.client(), event_id, user)
        c.emit(as_json, {"ok": True, "was_waiting": was}, "left the waitlist" if was else "was not on the waitlist")

    triggers_app = typer.Typer(help="Inventory trigger operations.", no_args_is_help=True)
    app.add_typer(triggers_app, name="triggers")

    @triggers_app.command("failures")
    def failures(all_: bool = typer.Option(False, "--all", help="Include resolved ones."),
                 as_json: bool = JsonOpt) -> None:
        """List dead-lettered inventory changes (repair with `boxoffice events reconcile EVENT`)."""
        from rich.table import Table

        from boxoffice.triggers.inventory import list_failures

        rows = list_failures(c.client(), include_resolved=all_)
        table = Table("change", "event", "shard", "failed at", "attempts", "resolved", "error")
        for r in rows:
            table.add_row(r["change_id"], r["event_id"], r["shard_id"], str(r.get("failed_at")),
                          str(r.get("attempts")), str(r.get("resolved")), r.get("error", "")[:80])
        c.emit(as_json, {"failures": [{k: v for k, v in r.items() if k != "traceback"} for r in rows]}, table)

    @events_app.command("reconcile")
    def reconcile(event_id: str, as_json: bool = JsonOpt) -> None:
        """Recompute an event's summary from its shards and resolve its dead-lettered changes."""
        from boxoffice.triggers.inventory import reconcile_event

        try:
            outcome = reconcile_event(c.client(), event_id)
        except errors.BoxofficeError as exc:
            c.fail(exc, as_json)
        s = dict(outcome.summary or {})
        c.emit(as_json, {"ok": True, "summary": s}, "summary: " + _summary_line(s))


def watch_summary(db: Any, event_id: str, as_json: bool, out: Any) -> None:
    """Print the event's summary each time it changes, until Ctrl-C (a Firestore listener)."""
    done = threading.Event()

    def on_change(docs: Any, changes: Any, read_time: Any) -> None:
        for doc in docs:
            s = (doc.to_dict() or {}).get("summary") or {}
            if as_json:
                print(json.dumps({"event_id": event_id, "summary": s}, default=str), flush=True)
            else:
                out.print(f"{read_time.isoformat(timespec='milliseconds')}  {_summary_line(s)}")

    from boxoffice.store.documents import event_ref

    watch = event_ref(db, event_id).on_snapshot(on_change)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        watch.unsubscribe()
