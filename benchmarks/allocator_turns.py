"""One allocator's turns on a backlog, side by side: its writes staged by ``EncodedWriteBatch``
and by the client library's ``WriteBatch`` (``encoded_writes``), alternating, on one emulator.

No buyers and no other process: what one turn of the allocator costs by itself (pull, read,
decide and stage, commit), per batch of 100 purchases (the emulator hands out 100 a pull).

    .venv/bin/python benchmarks/allocator_turns.py [--requests 1200] [--tickets 1000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from boxoffice.domain.allocation import RequestKind, TicketRequest
from boxoffice.domain.model import SaleStatus
from boxoffice.runtime.emulators import firestore_client, running_stack
from boxoffice.services.allocator import EventAllocator
from boxoffice.services.events import create_event
from boxoffice.services.releases import set_sale_status
from boxoffice.store.admission_queue import admission_queue


def one_sale(db, encoded: bool, requests: int, tickets: int) -> dict:
    event = create_event(db, name="Turns", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=30),
                         price=1000, currency="EUR", capacity=tickets, per_order_max=4, status=SaleStatus.DRAFT)
    queue = admission_queue(db.project)
    queue.ensure_queue(event.id)
    batch = [TicketRequest(id=f"t{event.id[-6:]}-{i:05d}", kind=RequestKind.PURCHASE, event_id=event.id,
                           user_id=f"u{i:05d}", quantity=1, idempotency_key=f"k{i}") for i in range(requests)]
    with ThreadPoolExecutor(50) as pool:
        list(pool.map(queue.publish, batch))
    allocator = EventAllocator(db, queue, event.id, f"turns-{'encoded' if encoded else 'library'}",
                               lease_ttl_s=60, write_summary=False, encoded_writes=encoded)
    assert allocator._hold_lease()
    set_sale_status(db, event.id, SaleStatus.ON_SALE)
    answered, idle, started = 0, 0, time.perf_counter()
    while answered < requests and time.perf_counter() - started < 120:
        n = allocator.step()
        answered += n
        idle += n == 0
    elapsed = time.perf_counter() - started
    allocator.stop()
    stats = allocator.stats
    sales = [i for i, n in enumerate(stats.batch_sizes) if n]  # every batch (sales and refusals)

    def median_ms(values: list[float]) -> float:
        return round(statistics.median(values[i] for i in sales) * 1000, 1)

    return {"staging": "encoded" if encoded else "library", "answered": answered, "batches": stats.batches,
            "granted": stats.granted, "idle_turns": idle, "seconds": round(elapsed, 2), "answers_per_s": round(answered / elapsed, 1),
            "median_read_ms": median_ms(stats.read_s), "median_decide_ms": median_ms(stats.decide_s),
            "median_commit_ms": median_ms(stats.commit_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with running_stack() as stack:
        db = firestore_client(stack)
        one_sale(db, True, args.requests, args.tickets)  # warm-up (the emulator's JIT), not counted
        runs = [one_sale(db, encoded, args.requests, args.tickets)
                for i in range(args.rounds) for encoded in ((True, False) if i % 2 else (False, True))]
    for run in runs:
        print(json.dumps(run))
    by = {mode: [r for r in runs if r["staging"] == mode] for mode in ("encoded", "library")}
    rate = {mode: statistics.mean(r["answers_per_s"] for r in rs) for mode, rs in by.items()}
    decide = {mode: statistics.mean(r["median_decide_ms"] for r in rs) for mode, rs in by.items()}
    print(json.dumps({"answers_per_s": rate, "encoded_vs_library_rate": round(rate["encoded"] / rate["library"], 2),
                      "median_decide_ms": decide}))


if __name__ == "__main__":
    main()
