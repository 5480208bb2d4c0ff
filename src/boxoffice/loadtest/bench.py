"""`boxoffice bench`: the queued sale (admission queue + batch allocator) at 1, 8 and 40 app
instances against the one-purchase-per-commit ceiling and baselines, in ONE run on one emulator.

Phases, each on an emptied database, all at the same concurrency and deadline:

1. ceiling: the writes of one purchase with no contention at all - every buyer on its own
   private event with one one-ticket inventory document - one purchase per commit, as a
   guarded batch and as a transaction; the faster counts;
2. queued, for each ``--instances`` N: ``buyers`` buyers for ``tickets`` tickets, spread over N
   OS processes that open the sale together, one allocator process deciding (and the batch
   size and commit rate behind the sales, read from the answer documents);
3. direct sharded (baseline): the same sale, each buyer committing its own purchase on a shard;
4. single document (``--single-document``, slow): one inventory document, transaction and batch.

The targets are ratios measured side by side in this run (issue 8).
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore

from boxoffice.domain import errors
from boxoffice.domain.model import new_event
from boxoffice.loadtest.baselines import CommitMode, purchase_directly
from boxoffice.loadtest.simulator import (
    SimulationConfig,
    Strategy,
    percentiles,
    run_simulation,
)
from boxoffice.store.event_records import insert_events

TARGETS = {
    "queued_8_vs_ceiling_sales": 2.0,  # at least: sales/s with 8 instances / ceiling purchases/s
    "queued_8_vs_ceiling_p99": 1.0,  # at most: p99 of all answers with 8 instances / ceiling p99
}
DEFAULT_INSTANCES = (1, 8, 40)


def measure_ceiling(
    db: firestore.Client, *, buyers: int, concurrency: int, mode: CommitMode, deadline_s: float
) -> dict[str, Any]:
    """Uncontended purchases per second: each buyer buys the only ticket of its own event."""
    run = secrets.token_hex(3)
    events = [
        new_event(event_id=f"ceil-{run}-{i:05d}", name="ceiling", venue="private",
                  starts_at=datetime.now(UTC) + timedelta(days=1), price=100, currency="EUR",
                  capacity=1, per_order_max=1, shard_count=1)
        for i in range(buyers)
    ]
    insert_events(db, events)
    latencies: list[float] = []
    failures: dict[str, int] = {}
    lock = threading.Lock()

    def buy(i: int) -> None:
        started = time.perf_counter()
        try:
            purchase_directly(db, events[i].id, f"ceil-user-{i}", 1, "k", mode=mode,
                              deadline_s=deadline_s, rng=random.Random(i))
            kind = None
        except errors.BoxofficeError as exc:
            kind = exc.code
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed * 1000)
            if kind:
                failures[kind] = failures.get(kind, 0) + 1

    opened = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(buy, range(buyers)))
    duration = time.perf_counter() - opened
    ok = buyers - sum(failures.values())
    return {
        "commit": mode.value,
        "buyers": buyers,
        "purchases": ok,
        "failures": failures,
        "duration_s": round(duration, 3),
        "purchases_per_s": round(ok / duration, 1),
        "latency_ms": percentiles(sorted(latencies)),
    }


def run_bench(
    db: firestore.Client,
    reset: Callable[[], None],
    *,
    buyers: int = 5000,
    tickets: int = 1000,
    concurrency: int = 200,
    deadline_s: float = 10.0,
    ceiling_buyers: int | None = None,
    instances: tuple[int, ...] = DEFAULT_INSTANCES,
    direct: bool = True,
    single_document: bool = False,
    seed: int = 7,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run every phase and compute the ratios. ``reset`` empties the database between phases."""
    ceilings = []
    for mode in (CommitMode.GUARDED_BATCH, CommitMode.TRANSACTION):
        reset()
        progress(f"ceiling ({mode.value})")
        ceilings.append(measure_ceiling(db, buyers=ceiling_buyers or buyers, concurrency=concurrency,
                                        mode=mode, deadline_s=deadline_s))
    ceiling = max(ceilings, key=lambda c: c["purchases_per_s"])

    def simulate(label: str, **config: Any) -> dict[str, Any]:
        reset()
        progress(label)
        report = run_simulation(db, SimulationConfig(buyers=buyers, tickets=tickets, concurrency=concurrency,
                                                     deadline_s=deadline_s, seed=seed, **config)).report()
        report["phase"] = label
        return report

    queued = {n: simulate(f"queued, {n} instance(s)", strategy=Strategy.QUEUED, instances=n) for n in instances}
    baselines: dict[str, dict[str, Any]] = {}
    if direct:
        baselines["direct_sharded"] = simulate("direct sharded (one purchase per commit)",
                                               strategy=Strategy.DIRECT_SHARDED)
    if single_document:
        for mode in (CommitMode.TRANSACTION, CommitMode.GUARDED_BATCH):
            baselines[f"single_document_{mode.value}"] = simulate(
                f"single document ({mode.value})", strategy=Strategy.SINGLE_DOCUMENT, commit=mode)
    ratios: dict[str, float | None] = {}
    for n, r in queued.items():
        ratios[f"queued_{n}_vs_ceiling_sales"] = round(r["sales_per_s"] / ceiling["purchases_per_s"], 3)
        ratios[f"queued_{n}_vs_ceiling_p99"] = round(r["latency_ms"]["p99"] / ceiling["latency_ms"]["p99"], 3)
    checks: dict[str, bool] = {}
    for n, r in queued.items():
        checks[f"queued_{n}_sold_all"] = r["tickets_sold"] == tickets
        checks[f"queued_{n}_no_errors"] = r["errors"] == 0
        checks[f"queued_{n}_not_oversold"] = r["oversold"] == 0
        checks[f"queued_{n}_fifo"] = r["fifo_violations"] == 0
        checks[f"queued_{n}_audit"] = bool(r["audit"]["ok"])
    if 8 in queued:
        checks["queued_8_vs_ceiling_sales"] = (ratios["queued_8_vs_ceiling_sales"] or 0) >= TARGETS[
            "queued_8_vs_ceiling_sales"]
        checks["queued_8_vs_ceiling_p99"] = (ratios["queued_8_vs_ceiling_p99"] or 0) <= TARGETS[
            "queued_8_vs_ceiling_p99"]
    return {
        "workload": {"buyers": buyers, "tickets": tickets, "concurrency": concurrency, "deadline_s": deadline_s,
                     "ceiling_buyers": ceiling_buyers or buyers, "instances": list(instances)},
        "ceiling": ceiling,
        "ceilings": ceilings,
        "queued": {str(n): r for n, r in queued.items()},
        "baselines": baselines,
        "ratios": ratios,
        "targets": TARGETS,
        "checks": checks,
        "all_targets_met": all(checks.values()),
    }


def rows(figures: dict[str, Any]) -> list[list[str]]:
    """The table a person reads: every phase with sales/s, latency, batch size and commits/s."""
    out = []
    for c in figures["ceilings"]:
        out.append([f"ceiling ({c['commit']}, 1 purchase/commit)", str(c["purchases"]), "-",
                    str(sum(c["failures"].values())), f"{c['purchases_per_s']:.1f}", f"{c['latency_ms']['p50']:.0f}",
                    f"{c['latency_ms']['p99']:.0f}", "-", "1.0", f"{c['purchases_per_s']:.0f}", "-"])
    for r in [*figures["queued"].values(), *figures["baselines"].values()]:
        q = r.get("queue") or {}
        out.append([r["phase"], str(r["tickets_sold"]), str(r["sold_out"]), str(r["errors"]),
                    f"{r['sales_per_s']:.1f}", f"{r['latency_ms']['p50']:.0f}", f"{r['latency_ms']['p99']:.0f}",
                    str(r["fifo_violations"]) if r["fifo_violations"] is not None else "-",
                    str(q.get("sales_per_commit", "1.0" if r["strategy"] != "queued" else "-")),
                    str(q.get("commits_per_s", "-")), "ok" if r["audit"]["ok"] else "FAILED"])
    return out


ROW_HEADERS = ("phase", "sold", "sold out", "errors", "sales/s", "p50 ms", "p99 ms", "FIFO viol.",
               "sales/commit", "commits/s", "audit")
