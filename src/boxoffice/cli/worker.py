"""`boxoffice worker` (run the parts, each an OS process, under a supervisor) and
`boxoffice worker status` (each part's state, and the backlog)."""

from __future__ import annotations

import json
import os
from typing import Any

import typer
from rich.table import Table

from boxoffice.cli import output as c
from boxoffice.cli.output import JsonOpt
from boxoffice.domain import errors
from boxoffice.log import configure
from boxoffice.messaging.topology import default_topology
from boxoffice.runtime import emulators as em
from boxoffice.runtime.devstack import use_recorded_pubsub
from boxoffice.runtime.root import TOPOLOGY_SUFFIX_ENV, part_names
from boxoffice.runtime.supervisor import Supervisor
from boxoffice.runtime.worker_report import worker_report

worker_app = typer.Typer(help="The background parts: run them, or see how they are doing.",
                         invoke_without_command=True)


def stack_env() -> None:
    """Name the `dev up` emulators in the environment, so the parts' processes inherit them."""
    if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
        recorded = em.recorded_stack()
        if recorded is not None:
            os.environ["FIRESTORE_EMULATOR_HOST"] = recorded.firestore_host
            os.environ.setdefault("GOOGLE_CLOUD_PROJECT", recorded.project)
    use_recorded_pubsub()


@worker_app.callback()
def worker(
    ctx: typer.Context,
    only: list[str] = typer.Option(None, "--only", help="Run only these parts (repeatable)."),
    duration: float | None = typer.Option(None, "--for", help="Stop after this many seconds."),
    worker_id: str | None = typer.Option(None, "--id", help="This worker's id (default w<pid>); "
                                         "several workers may run side by side."),
    as_json: bool = JsonOpt,
) -> None:
    """Run the background parts (inventory trigger, hold sweeper, outbox relay, subscribers,
    repair), each in its own process, restarted when it dies, until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    configure("INFO")
    c.client()  # fails with the usual message when there is no Firestore to work on
    stack_env()
    known = part_names()
    parts = list(only) if only else known
    unknown = [p for p in parts if p not in known]
    if unknown:
        c.fail(errors.InvalidRequest(f"unknown parts {unknown}; known: {known}"), as_json)
    supervisor = Supervisor(parts, state_dir=em.default_state_dir(), worker_id=worker_id)
    if not as_json:
        c.err.print(f"worker {supervisor.worker_id} running {', '.join(parts)} as processes "
                    f"(status: `boxoffice worker status`; logs in {supervisor.directory}); Ctrl-C stops")
    supervisor.run(duration_s=duration)
    view = supervisor.view()
    c.emit(as_json, view.as_dict(), json.dumps(view.as_dict(), indent=2, default=str))


def _age(v: Any) -> str:
    return "-" if v is None else f"{v:.0f}s ago"


def _status_table(report: dict[str, Any]) -> Table:
    table = Table("worker", "part", "state", "pid", "restarts", "progress", "last error / exit", "figures",
                  title="worker parts", title_justify="left")
    for r in report["parts"]:
        figures = ", ".join(f"{k}={v}" for k, v in r["status"].items()
                            if k != "alive" and isinstance(v, (int, float)) and not isinstance(v, bool))
        error = r["last_error"] or r["last_exit"] or ""
        if r["last_error_age_s"] is not None:
            error = f"{error[:70]} ({_age(r['last_error_age_s'])})"
        table.add_row(r["worker"], r["part"], r["state"], str(r["pid"] or "-"), str(r["restarts"]),
                      _age(r["last_progress_age_s"]), error, figures[:80])
    return table


def _backlog_table(report: dict[str, Any]) -> Table:
    table = Table(title="backlog", show_header=False, title_justify="left")
    b = report.get("backlog") or {}
    if "error" in b:
        table.add_row("database", f"[red]unreachable[/red]: {b['error']}")
    else:
        table.add_row("outbox unpublished", str(b.get("outbox_unpublished")))
        for sub, n in (b.get("undelivered") or {}).items():
            table.add_row(f"undelivered: {sub}", str(n))
        table.add_row("dead letters", str(b.get("dead_letters")))
    s = report.get("summary") or {}
    lag = s.get("lag_p99_s")
    table.add_row("summary", f"{s.get('pending_events', '-')} events pending, "
                             f"lag p99 {'-' if lag is None else f'{lag:.2f} s'} (trigger, since it started)")
    if s.get("event"):
        table.add_row(f"summary of {s['event'].get('event_id', '?')}", json.dumps(s["event"]))
    return table


@worker_app.command("status")
def status(
    event_id: str | None = typer.Option(None, "--event", help="Also say how far this event's summary lags."),
    all_: bool = typer.Option(False, "--all", help="Include stopped workers."),
    as_json: bool = JsonOpt,
) -> None:
    """Each running worker's parts (state, pid, restarts, last error, last progress) and the
    backlog: outbox unpublished, undelivered per subscription, dead letters, summary lag."""
    report = worker_report(em.default_state_dir(), c.client(),
                           default_topology(suffix=os.environ.get(TOPOLOGY_SUFFIX_ENV, "")),
                           event_id=event_id, include_stopped=all_)
    if as_json:
        print(json.dumps(report, default=str))
        return
    if not report["parts"]:
        c.out.print("no worker running (start one with `boxoffice worker`)")
    else:
        c.out.print(_status_table(report))
    c.out.print(_backlog_table(report))
