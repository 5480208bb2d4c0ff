"""`boxoffice simulate --pipeline`: the flash sale with the whole messaging pipeline running.

``SalePipeline`` is handed to ``run_simulation(..., pipeline=...)``, which calls it at two points:

- ``before_sale(event_id, user_ids)``: registers every simulated buyer as a user with an email
  address (services.users.register_users) and starts the outbox relay and the email and
  analytics subscribers (the simulator runs the inventory worker beside them);
- ``after_sale(event_id)``: waits until the event's messages are all published and handled
  (``drain``, scoped to the event), stops the loops, audits (``audit_pipeline``: one
  confirmation email per order, one cancellation email per cancellation, analytics equal the
  orders, nothing unpublished, no dead letter), and measures: messages handled per second,
  lag from purchase commit to confirmation email sent (p50, p99), and the emulator's raw
  consume rate for the same number of messages, measured right after in the same run, with
  the ratio. Returns the report's ``pipeline`` section; problems go into the sale's audit.

Isolation: each run gets its own topics and subscriptions (a ``.sim<hex>`` suffix, deleted at
the end), so an old backlog or old dead letters on the dev stack's subscriptions neither slow nor
fail the run. Do not run `boxoffice worker` at the same time: its relay would publish this run's
outbox to the dev topic, where this run's subscribers never see it (drain would time out). The
relay publishes every unpublished outbox message of the database, older runs' included: their
number is reported as ``unpublished_before`` (it is 0 on a fresh emulator).

Before/after comparison: ``BOXOFFICE_SIM_ORDERED_EMAIL=1`` runs the email subscription the old
way (ordered, one event's emails one after another on a streaming subscriber).

SMTP: the dev stack's server when `boxoffice dev up` recorded one that answers (its mailbox is
read by the audit), else a server process of our own on a free port with a temporary mailbox,
stopped at the end.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from google.cloud import firestore

from boxoffice.log import kv
from boxoffice.messaging import mailbox as mbox
from boxoffice.messaging import notify
from boxoffice.messaging.pipeline import (
    audit_pipeline, drain, measure_raw_consume_rate, pipeline_figures, unpublished_count,
)
from boxoffice.messaging.runner import MessagingLoops, build_loops
from boxoffice.messaging.topology import EMAIL, Topology, default_topology, delete_topology, ensure_topology
from boxoffice.services.users import register_users

log = logging.getLogger(__name__)

EMAIL_DOMAIN = "sim.boxoffice.test"


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


class SalePipeline:
    """The messaging side of one simulated sale. Use as a context manager (``close`` stops
    whatever was started: loops, SMTP server, topology)."""

    def __init__(self, db: firestore.Client, *, threads: int = 8, drain_timeout_s: float = 600.0,
                 raw_rate: bool = True) -> None:
        from boxoffice.messaging.devstack import use_recorded_pubsub

        if not use_recorded_pubsub():
            raise RuntimeError("--pipeline needs the Pub/Sub emulator (PUBSUB_EMULATOR_HOST or `boxoffice dev up`)")
        self.db = db
        self.threads = threads
        self.drain_timeout_s = drain_timeout_s
        self.raw_rate = raw_rate
        self.topology: Topology = default_topology(suffix=f".sim{secrets.token_hex(3)}")
        if os.environ.get("BOXOFFICE_SIM_ORDERED_EMAIL") == "1":
            self.topology = replace(self.topology, subscriptions=tuple(
                replace(s, ordered=True) if s.name == EMAIL else s for s in self.topology.subscriptions))
        self.loops: MessagingLoops | None = None
        self._smtp_pid: int | None = None
        self._tmp: Path | None = None
        self.unpublished_before = 0
        ensure_topology(self.topology)  # first: if it fails, no SMTP process is left behind
        self.smtp_address, self.mailbox = self._smtp()
        self.mailer = notify.Mailer(notify.SmtpSettings.from_address(self.smtp_address))

    def _smtp(self) -> tuple[str, mbox.Mailbox]:
        from boxoffice.messaging import devstack
        from boxoffice.runtime import emulators as em

        state = em.read_state() or {}
        if state.get("smtp_host") and state.get("mailbox_dir") and _answers(state["smtp_host"]):
            return state["smtp_host"], mbox.Mailbox(devstack.mailbox_dir(state))
        self._tmp = Path(tempfile.mkdtemp(prefix="boxoffice-sim-mail-"))
        self._smtp_pid, address = mbox.start_process(self._tmp / "mail", self._tmp / "smtp.log")
        return address, mbox.Mailbox(self._tmp / "mail")

    def __enter__(self) -> "SalePipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def before_sale(self, event_id: str, user_ids: list[str]) -> None:
        """Register the buyers (so every order has an address to confirm to), start the loops."""
        register_users(self.db, [(u, f"{u}@{EMAIL_DOMAIN}", f"Buyer {u}") for u in user_ids])
        self.unpublished_before = unpublished_count(self.db)
        if self.unpublished_before:
            kv(log, logging.WARNING, "simulate.outbox_backlog", unpublished=self.unpublished_before,
               note="older runs' messages are published and handled too")
        self.loops = build_loops(self.db, self.topology, self.mailer).start()

    def after_sale(self, event_id: str, problems: list[str]) -> dict[str, Any]:
        """Drain, stop the loops, audit (appending to ``problems``) and measure."""
        report = drain(self.db, self.topology, timeout_s=self.drain_timeout_s, poll_s=1.0, event_id=event_id)
        counts = self._stop_loops()
        found = audit_pipeline(self.db, event_id, self.mailbox, topology=self.topology)
        if not report.drained:
            found.insert(0, f"pipeline not drained: {report}")
        problems.extend(found)
        fig = pipeline_figures(self.db, event_id)
        raw = measure_raw_consume_rate(fig.messages, project=self.topology.project) \
            if self.raw_rate and fig.messages else None
        return {
            "drained": report.drained,
            "drain_wait_s": round(report.waited_s, 2),
            "messages": fig.messages,
            "emails": fig.emails,
            "window_s": round(fig.window_s, 3),
            "messages_per_s": round(fig.messages_per_s, 1),
            "handling_s": round(fig.handling_s, 3),
            "handled_per_s": round(fig.handled_per_s, 1),
            "email_lag_s": {"p50": _round(fig.lag_p50_s), "p99": _round(fig.lag_p99_s), "max": _round(fig.lag_max_s)},
            "publish_lag_s": {"p50": _round(fig.publish_lag_p50_s), "p99": _round(fig.publish_lag_p99_s)},
            "raw_consume": {"messages": raw.messages, "seconds": round(raw.seconds, 3), "per_s": round(raw.per_s, 1)}
            if raw else None,
            "ratio_handled_to_raw": round(fig.handled_per_s / raw.per_s, 3) if raw and raw.per_s else None,
            "subscribers": counts,
            "unpublished_before": self.unpublished_before,
            "smtp": self.smtp_address,
            "mailbox": str(self.mailbox.path),
            "topology_suffix": self.topology.suffix,
            "email_subscription": "ordered" if self.topology.spec(EMAIL).ordered else "unordered, parallel",
            "problems": found,
        }

    def _stop_loops(self) -> dict[str, Any]:
        if self.loops is None:
            return {}
        self.loops.stop()
        counts = self.loops.counts()
        self.loops = None
        return counts

    def close(self) -> None:
        self._stop_loops()
        self.mailer.close()
        try:
            delete_topology(self.topology)
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the run's outcome
            kv(log, logging.WARNING, "simulate.topology_cleanup_failed", error=repr(exc))
        if self._smtp_pid is not None:
            mbox.stop_process(self._smtp_pid)
            self._smtp_pid = None
        if self._tmp is not None and not os.environ.get("BOXOFFICE_KEEP_SIM_MAIL"):
            shutil.rmtree(self._tmp, ignore_errors=True)


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def pipeline_rows(pipeline: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for the report table (loadtest/report.py)."""
    lag = pipeline["email_lag_s"]
    raw = pipeline.get("raw_consume")
    rows = [
        ("pipeline", f"{pipeline['messages']} messages handled ({pipeline['emails']} emails), "
                     f"{pipeline['handled_per_s']:.0f}/s while handling ({pipeline['handling_s']:.1f} s), "
                     f"{pipeline['messages_per_s']:.0f}/s from first commit"),
        ("email lag", f"commit -> confirmation sent: p50 {_s(lag['p50'])}, p99 {_s(lag['p99'])}, max {_s(lag['max'])} "
                      f"(commit -> published: p50 {_s(pipeline['publish_lag_s']['p50'])})"),
    ]
    if raw:
        rows.append(("raw consume", f"{raw['per_s']:.0f}/s ({raw['messages']} messages, ack-only); "
                                    f"ratio {pipeline['ratio_handled_to_raw']}"))
    rows.append(("pipeline audit", "[green]ok[/green]" if not pipeline["problems"]
                 else "[red]FAILED[/red]: " + "; ".join(pipeline["problems"][:5])))
    return rows


def _s(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "-"
