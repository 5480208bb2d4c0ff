"""The `boxoffice` command: every group and command, wired in one place (exit codes in output.py)."""

from __future__ import annotations

import sys

import typer

from boxoffice.cli import dev, events, loadtest, messaging, sales, serve, users, worker
from boxoffice.cli.output import EXIT_BUG, EXIT_NO_EMULATOR, err
from boxoffice.runtime.emulators import EmulatorNotFound, EmulatorStartError

app = typer.Typer(
    help="boxoffice: event ticketing on Firestore and Pub/Sub.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dev.dev_app, name="dev")
app.add_typer(events.events_app, name="events")
app.command("simulate")(loadtest.simulate)
app.command("bench")(loadtest.bench)
app.add_typer(messaging.messaging_app, name="messaging")
app.add_typer(messaging.mail_app, name="mail")
app.add_typer(messaging.dlq_app, name="dlq")
app.add_typer(users.users_app, name="users")
app.command("stats")(messaging.stats_cmd)
app.command("serve")(serve.serve)
app.command("mint-tokens")(serve.mint_tokens)
app.command("buy")(sales.buy)
app.command("hold")(sales.hold)
app.command("confirm")(sales.confirm)
app.command("unhold")(sales.unhold)
app.command("cancel")(sales.cancel)
app.command("release")(sales.release)
app.command("sale")(sales.sale)
app.add_typer(sales.waitlist_app, name="waitlist")
app.add_typer(worker.worker_app, name="worker")
app.add_typer(events.triggers_app, name="triggers")


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except (EmulatorNotFound, EmulatorStartError) as exc:
        err.print(f"[red]emulators unavailable[/red]: {exc}")
        sys.exit(EXIT_NO_EMULATOR)
    except Exception as exc:  # noqa: BLE001 - last line of defence: say what broke, exit 1
        err.print(f"[red]unexpected error[/red]: {type(exc).__name__}: {exc}")
        sys.exit(EXIT_BUG)
