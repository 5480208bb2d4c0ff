"""`boxoffice bench`: the sharded purchase against its ceiling and its naive baselines, in ONE run.

Phases, each on an emptied database of the same emulator, all at the same concurrency:

1. ceiling: the writes of one purchase with no contention at all - every buyer on its own
   private event with one one-ticket inventory document - through the same
   ``purchase_tickets``, committed both ways (guarded batch, transaction); the faster counts;
2. sharded: ``buyers`` buyers for ``tickets`` tickets, default shard count;
3. single-document, transaction: one inventory document, a plain Firestore transaction;
4. single-document, guarded batch: one inventory document, the optimistic commit.

Every buyer has the same deadline in every phase. The ratios the targets are stated in are
computed from these figures, measured side by side.
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
from boxoffice.loadtest.simulator import (
    SimulationConfig,
    SimulationResult,
    Strategy,
    percentiles,
    run_simulation,
)
from boxoffice.services.purchasing import purchase_tickets
from boxoffice.store.event_records import insert_events
from boxoffice.store.purchases import CommitMode, ShardRouter

TARGETS = {
    "sharded_vs_ceiling_sales": 0.5,  # at least
    "sharded_vs_ceiling_p99": 3.0,  # at most
    "sharded_vs_single_document_sales": 30.0,  # at least
}


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
    router = ShardRouter()
    for event in events:
        router.learn_event(event)
    latencies: list[float] = []
    failures: dict[str, int] = {}
    lock = threading.Lock()

    def buy(i: int) -> None:
        started = time.perf_counter()
        try:
            purchase_tickets(db, events[i].id, f"ceil-user-{i}", 1, "k", mode=mode,
                             deadline_s=deadline_s, rng=random.Random(i), router=router)
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
    deadline_s: float = 5.0,
    ceiling_buyers: int | None = None,
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

    def simulate(strategy: Strategy, commit: CommitMode) -> SimulationResult:
        reset()
        progress(f"{strategy.value} ({commit.value if strategy is Strategy.SINGLE_DOCUMENT else 'batch'})")
        return run_simulation(db, SimulationConfig(
            buyers=buyers, tickets=tickets, concurrency=concurrency, strategy=strategy,
            commit=commit, deadline_s=deadline_s, seed=seed))

    sharded = simulate(Strategy.SHARDED, CommitMode.GUARDED_BATCH).report()
    single_txn = simulate(Strategy.SINGLE_DOCUMENT, CommitMode.TRANSACTION).report()
    single_batch = simulate(Strategy.SINGLE_DOCUMENT, CommitMode.GUARDED_BATCH).report()
    best_single = max(single_txn["sales_per_s"], single_batch["sales_per_s"])
    ratios = {
        "sharded_vs_ceiling_sales": round(sharded["sales_per_s"] / ceiling["purchases_per_s"], 3),
        "sharded_vs_ceiling_p99": round(sharded["latency_ms"]["p99"] / ceiling["latency_ms"]["p99"], 3),
        "sharded_vs_single_document_sales": round(sharded["sales_per_s"] / best_single, 1) if best_single else None,
    }
    checks = {
        "sharded_sold_all": sharded["tickets_sold"] == tickets,
        "sharded_no_errors": sharded["errors"] == 0,
        "sharded_not_oversold": sharded["oversold"] == 0 and sharded["audit"]["ok"],
        "sharded_vs_ceiling_sales": ratios["sharded_vs_ceiling_sales"] >= TARGETS["sharded_vs_ceiling_sales"],
        "sharded_vs_ceiling_p99": ratios["sharded_vs_ceiling_p99"] <= TARGETS["sharded_vs_ceiling_p99"],
        "sharded_vs_single_document_sales": best_single == 0
        or (ratios["sharded_vs_single_document_sales"] or 0) >= TARGETS["sharded_vs_single_document_sales"],
    }
    return {
        "workload": {"buyers": buyers, "tickets": tickets, "concurrency": concurrency,
                     "deadline_s": deadline_s, "ceiling_buyers": ceiling_buyers or buyers},
        "ceiling": ceiling,
        "ceilings": ceilings,
        "sharded": sharded,
        "single_document_transaction": single_txn,
        "single_document_batch": single_batch,
        "ratios": ratios,
        "targets": TARGETS,
        "checks": checks,
        "all_targets_met": all(checks.values()),
    }
