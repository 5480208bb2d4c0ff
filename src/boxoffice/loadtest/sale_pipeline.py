"""`boxoffice simulate --pipeline`: the flash sale with the whole messaging pipeline running.

``SalePipeline`` is handed to ``run_simulation(..., pipeline=...)``, which calls it at two points:

- ``before_sale(event_id, user_ids)``: registers every simulated buyer as a user with an email
  address (services.users.register_users). The simulator then starts the worker
  (runtime/supervisor.py) with the inventory parts and this pipeline's ``parts`` (outbox relay,
  email and analytics subscribers), each an OS process of its own, in ``worker_env()`` (this
  run's topology and SMTP server), as production runs them beside the buyers;
- ``after_sale(event_id, problems, worker)``: waits until the event's messages are all published
  and handled (``drain``, scoped to the event), reads the parts' counters from their status,
  stops the worker, audits (``audit_pipeline``: one
  confirmation email per order, one cancellation email per cancellation, analytics equal the
  orders, nothing unpublished, no dead letter), and measures: messages handled per second,
  lag from purchase commit to confirmation email sent (p50, p99), and the emulator's raw
  consume rate for the same number of messages, measured right after in the same run, with
  the ratio; then the pipeline's capacity on a backlog of the same message mix with one worker
  and with two (loadtest/pipeline_capacity.py: during the sale the subscribers keep up, so the
  sale's handled rate is the buyers' rate), each audited. Returns the report's ``pipeline``
  section; problems go into the sale's audit.

Isolation: each run gets its own topics and subscriptions (a ``.sim<hex>`` suffix, deleted at
the end), so an old backlog or old dead letters on the dev stack's subscriptions neither slow nor
fail the run. Do not run `boxoffice worker` at the same time: its relay would publish this run's
outbox to the dev topic, where this run's subscribers never see it (drain would time out). This
run's relay publishes every unpublished outbox message of the database, older runs' included: their
number is reported as ``unpublished_before`` (it is 0 on a fresh emulator).

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
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from google.cloud import firestore

from boxoffice.domain.messages import MessageType
from boxoffice.loadtest.pipeline_checks import audit_pipeline, measure_raw_consume_rate, pipeline_figures
from boxoffice.log import kv
from boxoffice.messaging.backlog import drain, unpublished_count
from boxoffice.messaging.topology import (
    EMAIL,
    Topology,
    default_topology,
    delete_topology,
    ensure_topology,
)
from boxoffice.runtime import devstack
from boxoffice.runtime import emulators as em
from boxoffice.runtime import mailbox as mbox
from boxoffice.runtime.devstack import use_recorded_pubsub
from boxoffice.runtime.root import (
    ANALYTICS_LOOP,
    EMAIL_LOOP,
    RELAY,
    TOPOLOGY_SUFFIX_ENV,
)
from boxoffice.runtime.supervisor import Supervisor
from boxoffice.services.users import register_users

if TYPE_CHECKING:
    from boxoffice.runtime.supervisor import Supervisor

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
    whatever was started: SMTP server, topology)."""

    parts: ClassVar[list[str]] = [RELAY, EMAIL_LOOP, ANALYTICS_LOOP]

    def __init__(self, db: firestore.Client, *, drain_timeout_s: float = 600.0, raw_rate: bool = True,
                 workers: int = 1, capacity: bool = True) -> None:
        if not use_recorded_pubsub():
            raise RuntimeError("--pipeline needs the Pub/Sub emulator (PUBSUB_EMULATOR_HOST or `boxoffice dev up`)")
        self.db = db
        # Workers running the pipeline's parts: the simulator's own, plus ``workers - 1`` more
        # started here (side by side, as a second `boxoffice worker` would be): the scale-out figure.
        self.workers = workers
        self._extra: list[Supervisor] = []
        self.drain_timeout_s = drain_timeout_s
        self.raw_rate = raw_rate
        # After the sale: the pipeline's capacity on a backlog with one worker and with two
        # (loadtest/pipeline_capacity.py), beside the raw consume rate.
        self.capacity = capacity
        self.user_ids: list[str] = []
        self.topology: Topology = default_topology(suffix=f".sim{secrets.token_hex(3)}")
        self._smtp_pid: int | None = None
        self._tmp: Path | None = None
        self.unpublished_before = 0
        ensure_topology(self.topology)  # first: if it fails, no SMTP process is left behind
        self.smtp_address, self.mailbox = self._smtp()

    def _smtp(self) -> tuple[str, mbox.Mailbox]:

        state = em.read_state() or {}
        if state.get("smtp_host") and state.get("mailbox_dir") and _answers(state["smtp_host"]):
            return state["smtp_host"], mbox.Mailbox(devstack.mailbox_dir(state))
        self._tmp = Path(tempfile.mkdtemp(prefix="boxoffice-sim-mail-"))
        self._smtp_pid, address = mbox.start_process(self._tmp / "mail", self._tmp / "smtp.log")
        return address, mbox.Mailbox(self._tmp / "mail")

    def __enter__(self) -> SalePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def worker_env(self) -> dict[str, str]:
        """What the worker's parts need to serve this run: its topology and its SMTP server."""
        return {TOPOLOGY_SUFFIX_ENV: self.topology.suffix, "BOXOFFICE_SMTP_HOST": self.smtp_address}

    def before_sale(self, event_id: str, user_ids: list[str]) -> None:
        """Register the buyers (so every order has an address to confirm to)."""
        register_users(self.db, [(u, f"{u}@{EMAIL_DOMAIN}", f"Buyer {u}") for u in user_ids])
        self.user_ids = list(user_ids)
        self.unpublished_before = unpublished_count(self.db)
        if self.unpublished_before:
            kv(log, logging.WARNING, "simulate.outbox_backlog", unpublished=self.unpublished_before,
               note="older runs' messages are published and handled too")

        for i in range(1, self.workers):
            extra = Supervisor(self.parts, state_dir=em.default_state_dir(),
                               worker_id=f"sim-{self.topology.suffix.lstrip('.')}-{i}",
                               env=dict(os.environ, **self.worker_env())).start()
            self._extra.append(extra)
            extra.wait_ready(120)

    def after_sale(self, event_id: str, problems: list[str], worker: Supervisor) -> dict[str, Any]:
        """Drain, stop the workers, audit (appending to ``problems``) and measure."""
        report = drain(self.db, self.topology, timeout_s=self.drain_timeout_s, poll_s=1.0, event_id=event_id)
        counts = {w.worker_id: {name: w.fresh_part_status(name) for name in self.parts}
                  for w in [worker, *self._extra]}
        worker.stop()
        self._stop_extra()
        found = audit_pipeline(self.db, event_id, self.mailbox, topology=self.topology)
        if not report.drained:
            found.insert(0, f"pipeline not drained: {report}")
        problems.extend(found)
        fig = pipeline_figures(self.db, event_id)
        capacity = self._capacity(event_id, found) if self.capacity and fig.messages else None
        raw = measure_raw_consume_rate(fig.messages, project=self.topology.project) \
            if self.raw_rate and fig.messages else None
        if capacity is not None:
            one, two = capacity
            capacity_section: dict[str, Any] | None = {
                "one_worker": one.as_dict(), "two_workers": two.as_dict(),
                "scale_out": round(two.handled_per_s / one.handled_per_s, 3) if one.handled_per_s else None,
                "ratio_to_raw": round(one.handled_per_s / raw.per_s, 3) if raw and raw.per_s else None,
            }
        else:
            capacity_section = None
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
            "publish_lag_s": {"p50": _round(fig.publish_lag_p50_s), "p99": _round(fig.publish_lag_p99_s),
                              "marked_p99": _round(fig.marked_lag_p99_s)},
            "raw_consume": {"messages": raw.messages, "seconds": round(raw.seconds, 3), "per_s": round(raw.per_s, 1)}
            if raw else None,
            "ratio_handled_to_raw": round(fig.handled_per_s / raw.per_s, 3) if raw and raw.per_s else None,
            "capacity": capacity_section,
            "workers": self.workers,
            "parts": counts,
            "unpublished_before": self.unpublished_before,
            "smtp": self.smtp_address,
            "mailbox": str(self.mailbox.path),
            "topology_suffix": self.topology.suffix,
            "email_subscription": "ordered" if self.topology.spec(EMAIL).ordered else "unordered, parallel",
            "problems": found,
        }

    def _capacity(self, event_id: str, problems: list[str]) -> tuple[Any, Any]:
        """Backlog phases with the sale's message mix: one worker, then two (problems appended)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        from boxoffice.loadtest.pipeline_capacity import measure_capacity
        from boxoffice.runtime import emulators as em
        from boxoffice.store.documents import ORDERS, OUTBOX

        # The library types AggregationQuery.get loosely; the result is [[AggregationResult]].
        order_count: Any = self.db.collection(ORDERS).where(filter=FieldFilter("event_id", "==", event_id)).count()
        cancel_count: Any = (self.db.collection(OUTBOX).where(filter=FieldFilter("event_id", "==", event_id))
                             .where(filter=FieldFilter("type", "==", MessageType.ORDER_CANCELLED)).count())
        orders, cancels = order_count.get(), cancel_count.get()
        n_orders, n_cancels = int(orders[0][0].value), int(cancels[0][0].value)
        phases = []
        for workers in (1, 2):
            phase = measure_capacity(self.db, self.topology, self.mailbox, self.worker_env(), workers=workers,
                                     users=self.user_ids, orders=n_orders, cancellations=min(n_cancels, n_orders),
                                     state_dir=em.default_state_dir(), drain_timeout_s=self.drain_timeout_s)
            problems.extend(f"capacity, {workers} worker(s): {p}" for p in phase.problems)
            phases.append(phase)
        return phases[0], phases[1]

    def _stop_extra(self) -> None:
        for extra in self._extra:
            extra.stop()
        self._extra = []

    def close(self) -> None:
        self._stop_extra()
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
        ("publish lag", f"commit -> Pub/Sub acknowledged the relay's publish: p50 {_s(pipeline['publish_lag_s']['p50'])}, "
                        f"p99 {_s(pipeline['publish_lag_s']['p99'])}; -> marked published p99 "
                        f"{_s(pipeline['publish_lag_s'].get('marked_p99'))}"),
    ]
    if raw:
        rows.append(("raw consume", f"{raw['per_s']:.0f}/s ({raw['messages']} messages, ack-only); "
                                    f"ratio {pipeline['ratio_handled_to_raw']}"))
    cap = pipeline.get("capacity")
    if cap:
        one, two = cap["one_worker"], cap["two_workers"]
        rows.append(("capacity", f"backlog of {one['messages']}: 1 worker {one['handled_per_s']:.0f}/s, "
                                 f"2 workers {two['handled_per_s']:.0f}/s ({cap['scale_out']}x); "
                                 f"1 worker / raw {cap['ratio_to_raw']}"))
        for label, phase in (("1 worker", one), ("2 workers", two)):
            spent = phase.get("cpu")
            if spent:
                top = ", ".join(f"{k} {v:.1f}" for k, v in list(spent["cpu_s"].items())[:5])
                rows.append((f"CPU, {label}", f"machine {spent['machine_busy']:.0%} busy over {spent['wall_s']:.1f} s "
                                              f"({spent['cores']} cores); CPU s: {top}"))
    rows.append(("pipeline audit", "[green]ok[/green]" if not pipeline["problems"]
                 else "[red]FAILED[/red]: " + "; ".join(pipeline["problems"][:5])))
    return rows


def _s(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "-"
