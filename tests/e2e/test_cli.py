"""The `boxoffice` command end to end, as a user or a script runs it, against the emulators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REQUIRED_REPORT_FIELDS = {
    "event_id", "capacity", "buyers", "tickets_sold", "orders_confirmed", "sold_out", "errors",
    "oversold", "throughput_per_s", "latency_ms", "duration_s", "audit",
}


def run(stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FIRESTORE_EMULATOR_HOST=stack.firestore_host, GOOGLE_CLOUD_PROJECT=stack.project)
    return subprocess.run([sys.executable, "-m", "boxoffice.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_create_buy_replay_and_refusals_with_exit_codes(stack, db):
    created = run(stack, "events", "create", "--name", "Gig", "--venue", "Hall", "--starts-at",
                  "2027-01-31T20:00:00+01:00", "--price", "2500", "--capacity", "3", "--per-order-max", "2", "--json")
    assert created.returncode == 0, created.stderr
    event_id = json.loads(created.stdout)["id"]

    bought = run(stack, "buy", event_id, "--user", "alice", "--quantity", "2", "--key", "k1", "--json")
    assert bought.returncode == 0, bought.stderr
    order = json.loads(bought.stdout)
    assert order["ok"] and not order["replayed"] and order["order"]["quantity"] == 2

    replay = json.loads(run(stack, "buy", event_id, "--user", "alice", "--quantity", "2", "--key", "k1", "--json").stdout)
    assert replay["replayed"] and replay["order"]["id"] == order["order"]["id"]

    not_enough = run(stack, "buy", event_id, "--user", "bob", "--quantity", "2", "--key", "k2", "--json")
    assert not_enough.returncode == 4 and json.loads(not_enough.stdout)["error"] == "not_enough_tickets"
    bad = run(stack, "buy", event_id, "--user", "bob", "--quantity", "0", "--json")
    assert bad.returncode == 2
    missing = run(stack, "buy", "no-such-event", "--user", "bob", "--json")
    assert missing.returncode == 3
    missing = run(stack, "waitlist", "leave", "no-such-event", "--user", "bob", "--json")
    assert missing.returncode == 3 and json.loads(missing.stdout)["error"] == "event_not_found"

    shown = json.loads(run(stack, "events", "show", event_id, "--json").stdout)
    # The API's event as its organiser sees it (counted from the shards), and the operator's extras.
    assert shown["availability"] == {"available": 1, "held": 0, "sold": 2, "capacity": 3, "live": True, "types": None}
    assert shown["shards"] >= 1 and shown["summary"]["capacity"] == 3


def test_simulate_writes_a_clean_report_and_a_plot(stack, db, tmp_path: Path):
    report_path, plot_path = tmp_path / "r.json", tmp_path / "r.png"
    done = run(stack, "simulate", "--buyers", "80", "--tickets", "25", "--concurrency", "40", "--max-quantity", "2",
               "--seed", "3", "--json", str(report_path), "--plot", str(plot_path), "--project", stack.project)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert report.keys() >= REQUIRED_REPORT_FIELDS
    assert report["tickets_sold"] == 25 and report["errors"] == 0 and report["oversold"] == 0
    assert report["audit"]["ok"] and set(report["latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert plot_path.stat().st_size > 10_000
