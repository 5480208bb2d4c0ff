"""`boxoffice worker` runs the whole pipeline, and `simulate --pipeline` audits it: real
Firestore and Pub/Sub emulators, a real SMTP server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from boxoffice.loadtest.pipeline_checks import audit_pipeline
from boxoffice.messaging import analytics
from boxoffice.messaging.backlog import drain
from boxoffice.messaging.topology import delete_topology
from boxoffice.runtime.root import TOPOLOGY_SUFFIX_ENV, build_worker, local_topology
from boxoffice.runtime.worker import wait_until
from boxoffice.services.cancellations import cancel_order
from boxoffice.services.events import create_event
from boxoffice.services.purchasing import purchase_tickets
from boxoffice.services.users import register_users
from boxoffice.store.documents import event_ref


@pytest.fixture
def worker_env(stack, smtp, monkeypatch):
    """The worker's environment: this test's SMTP server and a topology of its own."""
    monkeypatch.setenv("BOXOFFICE_SMTP_HOST", smtp.address)
    monkeypatch.setenv(TOPOLOGY_SUFFIX_ENV, f".w{uuid.uuid4().hex[:8]}")
    yield
    topology = local_topology()
    if topology is not None:
        delete_topology(topology)


def test_the_worker_runs_the_whole_pipeline_from_purchase_to_email_and_analytics(db, smtp, worker_env):
    event = create_event(db, name="Gig", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=30),
                         price=2500, currency="EUR", capacity=10, per_order_max=2)
    users = [f"w{i}" for i in range(4)]
    register_users(db, [(u, f"{u}@example.test", None) for u in users])
    worker = build_worker(db)
    assert {loop.name for loop in worker.loops} >= {
        "inventory-trigger", "hold-sweeper", "outbox-relay", "subscriber-email", "subscriber-analytics"}
    with worker:
        orders = [purchase_tickets(db, event.id, u, 2, f"k-{u}").order for u in users]
        cancel_order(db, orders[0].id, orders[0].user_id)
        report = drain(db, local_topology(), timeout_s=60, poll_s=0.3, event_id=event.id)
        summary_ok = wait_until(
            lambda: (event_ref(db, event.id).get().to_dict() or {}).get("summary", {}).get("sold") == 6, 30)
        status = worker.status()
    assert report.drained, report
    assert summary_ok  # the inventory trigger ran beside the messaging loops
    assert all(s.get("alive") for s in status.values()), status
    kinds = sorted(i.kind for i in smtp.mailbox.items())
    assert kinds == ["order_cancelled"] + ["order_confirmed"] * 4
    stats = analytics.read_stats(db, event.id)
    assert (stats.orders, stats.tickets_sold, stats.tickets_cancelled, stats.revenue) == (4, 8, 2, 20000)
    assert audit_pipeline(db, event.id, smtp.mailbox, topology=local_topology()) == []


def test_simulate_with_the_pipeline_audits_emails_and_analytics_and_reports_the_figures(db):
    from boxoffice.loadtest.sale_pipeline import SalePipeline
    from boxoffice.loadtest.simulator import SimulationConfig, run_simulation

    config = SimulationConfig(buyers=60, tickets=20, concurrency=20, cancel_share=0.25, seed=7)
    with SalePipeline(db, drain_timeout_s=90) as pipeline:
        result = run_simulation(db, config, pipeline=pipeline)
    report = result.report()
    p = report["pipeline"]
    assert report["audit"]["ok"], report["audit"]["problems"]
    assert p["drained"] and p["problems"] == []
    confirmed, cancelled = report["orders_confirmed"], report["orders_cancelled"]
    assert confirmed >= 20 and cancelled > 0  # cancelled tickets went back on sale
    assert p["emails"] == confirmed + cancelled
    assert p["messages"] == 2 * (confirmed + cancelled)  # email + analytics for each
    assert p["email_lag_s"]["p50"] is not None and p["email_lag_s"]["p50"] >= 0
    assert p["raw_consume"]["messages"] == p["messages"] and p["ratio_handled_to_raw"] > 0
    # The capacity phases: the same message mix on a backlog, one worker then two, both audited clean.
    cap = p["capacity"]
    assert cap["one_worker"]["messages"] == cap["two_workers"]["messages"] == p["messages"]
    assert cap["one_worker"]["handled_per_s"] > 0 and cap["scale_out"] > 0 and cap["ratio_to_raw"] > 0
