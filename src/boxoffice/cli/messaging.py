"""`boxoffice messaging ...` (topology, run, drain, audit, raw-rate), `mail list`, `stats EVENT`,
`dlq list|replay`: the messaging pipeline from the command line."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from datetime import datetime
from typing import Any

import typer
from rich.table import Table

from boxoffice import log as blog
from boxoffice.cli.output import (
    EXIT_BUSY,
    EXIT_REFUSED,
    JsonOpt,
    client,
    emit,
    err,
    money,
)
from boxoffice.loadtest.pipeline_checks import audit_pipeline, measure_raw_consume_rate
from boxoffice.messaging import email
from boxoffice.messaging.analytics import read_stats
from boxoffice.messaging.backlog import drain
from boxoffice.messaging.deadletter import list_dead_letters, replay
from boxoffice.messaging.repair import repair
from boxoffice.messaging.topology import (
    default_topology,
    ensure_topology,
    publisher_client,
    subscriber_client,
)
from boxoffice.runtime import devstack, root
from boxoffice.runtime.mailbox import Mailbox
from boxoffice.runtime.messaging_runner import SubscriberSettings, build_loops

messaging_app = typer.Typer(help="Outbox relay, Pub/Sub topology and subscribers.", no_args_is_help=True)
mail_app = typer.Typer(help="The local mailbox of the dev stack's SMTP server.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: messages subscribers gave up on.", no_args_is_help=True)


def _topology() -> Any:
    """The dev stack's topology (not created: `messaging topology` and `dev up` create it)."""
    return root.local_topology(create=False) or default_topology()


@messaging_app.command("topology")
def topology_cmd(
    project: str | None = typer.Option(None, help="Project (default: GOOGLE_CLOUD_PROJECT or the dev stack's)."),
    as_json: bool = JsonOpt,
) -> None:
    """Create the topics and subscriptions that are missing (idempotent). Against a real project
    when PUBSUB_EMULATOR_HOST is unset and no dev stack runs."""
    devstack.use_recorded_pubsub()
    topo = default_topology(project)
    created = ensure_topology(topo)
    emit(as_json, {"project": topo.project, "created": created},
         f"topology of {topo.project}: {len(created)} created" + "".join(f"\n  + {c}" for c in created))


@messaging_app.command("run")
def run_cmd(
    duration: float = typer.Option(0, help="Stop after this many seconds (0: until Ctrl-C)."),
    no_relay: bool = typer.Option(False, "--no-relay", help="Run only the subscribers."),
    batch: int = typer.Option(0, help="Messages per pull (0: the default or BOXOFFICE_PULL_BATCH)."),
    as_json: bool = JsonOpt,
) -> None:
    """Run the outbox relay and the email and analytics subscribers in the foreground."""
    blog.configure(logging.INFO)
    topo = _topology()
    ensure_topology(topo)
    settings = SubscriberSettings.from_env()
    if batch:
        settings = dataclasses.replace(settings, batch=batch)
    mailer = email.Mailer(root.smtp_settings() or email.SmtpSettings.from_env(), settings.smtp_connections)
    loops = build_loops(client(), topo, mailer, relay=not no_relay, settings=settings).start()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not as_json:
        err.print(f"messaging running on {topo.project} (SMTP {mailer.settings.host}:{mailer.settings.port}); Ctrl-C stops")
    stop.wait(duration or None)
    loops.stop()
    mailer.close()
    emit(as_json, loops.counts(), f"stopped: {loops.counts()}")


@messaging_app.command("drain")
def drain_cmd(timeout: float = typer.Option(120, help="Seconds to wait."), as_json: bool = JsonOpt) -> None:
    """Wait until the outbox is published and every subscription handled its messages (exit 5 if not)."""
    report = drain(client(), _topology(), timeout_s=timeout)
    emit(as_json, report.__dict__, str(report))
    if not report.drained:
        raise typer.Exit(EXIT_BUSY)


@messaging_app.command("repair")
def repair_cmd(
    grace: float = typer.Option(60, help="Leave messages published less than this many seconds ago alone."),
    since: datetime | None = typer.Option(None, help="Look back to this time (ISO 8601) instead of the watermark.",
                                          formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"]),
    limit: int = typer.Option(1000, min=1, max=10000, help="At most this many outbox messages per run."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what is missing, change nothing."),
    as_json: bool = JsonOpt,
) -> None:
    """Find published messages whose effects are missing (no email record, no analytics count:
    the broker lost them) and have the relay publish them again; subscribers skip what they did."""
    result = repair(client(), _topology(), grace_s=grace, since=since, limit=limit, dry_run=dry_run)
    verb = "would republish" if dry_run else "republished"
    emit(as_json, result.as_dict(),
         f"checked {result.checked} messages from {result.window_start:%Y-%m-%d %H:%M:%S}: "
         f"{verb} {len(result.republished)} {result.missing or ''}, {result.in_flight} in flight")


@messaging_app.command("audit")
def audit_cmd(event_id: str, as_json: bool = JsonOpt) -> None:
    """Check emails, analytics, outbox and dead letters of an event against its orders (exit 4 on problems)."""
    problems = audit_pipeline(client(), event_id, Mailbox(devstack.mailbox_dir()), topology=_topology())
    emit(as_json, {"ok": not problems, "problems": problems},
         "pipeline ok" if not problems else "\n".join(problems))
    if problems:
        raise typer.Exit(EXIT_REFUSED)


@messaging_app.command("raw-rate")
def raw_rate_cmd(messages: int = typer.Option(1000, help="Messages to publish and consume."),
                 ordered: bool = typer.Option(False, help="One ordering key, ordered subscription."),
                 as_json: bool = JsonOpt) -> None:
    """Measure the Pub/Sub emulator's raw consume rate (ack-only subscriber): the ceiling."""
    topo = _topology()
    r = measure_raw_consume_rate(messages, project=topo.project, ordered=ordered)
    emit(as_json, r.__dict__, f"{r.messages} messages in {r.seconds:.2f} s: {r.per_s:.0f}/s (ordered={r.ordered})")


@mail_app.command("list")
def mail_list(limit: int = typer.Option(50, help="Show the last N."), as_json: bool = JsonOpt) -> None:
    """Emails the dev stack's SMTP server received (resends of one Message-ID marked)."""
    box = Mailbox(devstack.mailbox_dir())
    items = box.items()
    dups = box.duplicates()
    table = Table("received", "to", "subject", "kind", "Message-ID", title=f"{box.path}: {len(items)} emails, "
                  f"{len(box.distinct())} distinct")
    for i in items[-limit:]:
        table.add_row(i.received_at[:19], ", ".join(i.to), i.subject, i.kind,
                      i.message_id + (f" (x{dups[i.message_id]})" if i.message_id in dups else ""))
    emit(as_json, {"mailbox": str(box.path), "count": len(items), "distinct": len(box.distinct()),
                   "emails": [i.__dict__ for i in items[-limit:]]}, table)


def stats_cmd(event_id: str, as_json: bool = JsonOpt) -> None:
    """Sales analytics of an event, as counted by the analytics subscriber."""
    s = read_stats(client(), event_id)
    cur = s.currency or ""
    table = Table(title=f"analytics of {event_id}", show_header=False, title_justify="left")
    table.add_row("orders", str(s.orders))
    table.add_row("tickets sold", f"{s.tickets_sold} (net {s.net_tickets})")
    table.add_row("revenue", f"{money(s.revenue, cur)} (net {money(s.net_revenue, cur)})")
    table.add_row("cancellations", f"{s.cancellations} ({s.tickets_cancelled} tickets, refunds {money(s.refunds, cur)})")
    for type_id, c in sorted(s.types.items()):
        table.add_row(f"type {type_id}", f"{c['tickets_sold']} sold in {c['orders']} orders, {money(c['revenue'], cur)}; "
                                         f"{c['tickets_cancelled']} cancelled, refunds {money(c['refunds'], cur)}")
    for minute, n in sorted(s.per_minute.items())[-10:]:
        table.add_row(f"  {minute}", f"{n} tickets")
    emit(as_json, s.as_dict(), table)


@dlq_app.command("list")
def dlq_list(limit: int = typer.Option(100, help="At most this many."), as_json: bool = JsonOpt) -> None:
    """Messages in the dead-letter topic, with the subscription that gave up and its error."""
    topo = _topology()  # first: it points the Pub/Sub client at the dev stack
    letters = list_dead_letters(subscriber_client(), topo, client(), max_messages=limit)
    table = Table("message", "type", "event", "subscription", "attempts", "error")
    for d in letters:
        table.add_row(d.message_id, d.type, d.event_id, d.subscription, str(d.attempts), d.error[:80])
    emit(as_json, {"dead_letters": [{k: v for k, v in d.__dict__.items() if k not in ("data", "ack_id")}
                                    for d in letters]}, table)


@dlq_app.command("replay")
def dlq_replay(message_id: str | None = typer.Option(None, "--message", help="Only this message id."),
               limit: int = typer.Option(100, help="At most this many."), as_json: bool = JsonOpt) -> None:
    """Send dead letters back to the ticket-events topic (subscribers that already handled one skip it)."""
    topo = _topology()  # first: it points the Pub/Sub client at the dev stack
    done = replay(subscriber_client(), publisher_client(), topo, client(), max_messages=limit,
                  message_id=message_id)
    emit(as_json, {"replayed": [d.message_id for d in done]}, f"replayed {len(done)} message(s)")
