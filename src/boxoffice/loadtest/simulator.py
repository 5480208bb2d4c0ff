"""The flash-sale simulator: many concurrent buyers racing for few tickets, then an audit.

Each buyer is one purchase attempt (through the same ``purchase_tickets`` a real client calls)
on a thread of a pool as wide as ``concurrency``. Every answer is classified as a sale, a
"sold out" (including "not enough tickets left"), a refusal by another rule, or an error
(contention timeout or anything unexpected): the last must stay at zero while tickets remain.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from google.cloud import firestore

from boxoffice.domain import errors
from boxoffice.domain.availability import is_reflected
from boxoffice.domain.model import order_id_for
from boxoffice.loadtest.sale_audit import Audit, audit_sale
from boxoffice.runtime import emulators as em
from boxoffice.runtime.supervisor import Supervisor
from boxoffice.runtime.worker import wait_until
from boxoffice.services.cancellations import cancel_order
from boxoffice.services.events import create_event
from boxoffice.services.holds import confirm_hold, hold_tickets, release_expired_holds
from boxoffice.services.purchasing import PurchaseResult, purchase_tickets
from boxoffice.store.documents import event_ref, inventory_col, order_ref
from boxoffice.store.purchases import CommitMode, ShardRouter

if TYPE_CHECKING:
    from boxoffice.loadtest.sale_pipeline import SalePipeline


class Strategy(StrEnum):
    SHARDED = "sharded"
    SINGLE_DOCUMENT = "single-document"


@dataclass(frozen=True)
class SimulationConfig:
    buyers: int = 2000
    tickets: int = 500
    concurrency: int = 200
    max_quantity: int = 1
    shards: int | None = None  # None: the event's default for its capacity
    strategy: Strategy = Strategy.SHARDED
    # How the single-document baseline commits; the sharded strategy always uses guarded batches.
    commit: CommitMode = CommitMode.TRANSACTION
    deadline_s: float = 10.0
    seed: int | None = None
    # Buyers are spread over this many independent "app instances", each with its own shard
    # router: buyers of different instances race each other only through Firestore.
    instances: int = 1
    # The real-time inventory mix: a share of buyers hold (a cart) instead of buying at once;
    # of those, a share confirm and the rest let the hold expire; a share of all orders are
    # then cancelled. With any of these, the inventory worker runs during the sale.
    hold_share: float = 0.0
    confirm_share: float = 0.5
    cancel_share: float = 0.0
    hold_ttl_s: float = 2.0
    worker: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.buyers < 1:
            problems.append("buyers must be at least 1")
        if self.tickets < 1:
            problems.append("tickets must be at least 1")
        if not 1 <= self.concurrency <= 1000:
            problems.append("concurrency must be between 1 and 1000")
        if not 1 <= self.max_quantity <= 50:
            problems.append("max-quantity must be between 1 and 50")
        if self.instances < 1:
            problems.append("instances must be at least 1")
        if self.deadline_s <= 0:
            problems.append("deadline must be positive")
        for name in ("hold_share", "confirm_share", "cancel_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name.replace('_', '-')} must be between 0 and 1")
        if self.hold_ttl_s <= 0:
            problems.append("hold-ttl must be positive")
        if problems:
            raise errors.InvalidRequest("invalid simulation: " + "; ".join(problems))


class Answer(StrEnum):
    SOLD = "sold"
    SOLD_OUT = "sold_out"
    HELD_THEN_EXPIRED = "held_then_expired"  # the buyer held tickets and walked away
    REFUSED = "refused"
    ERROR = "error"

    @property
    def is_mixed(self) -> bool:
        return self is Answer.HELD_THEN_EXPIRED


@dataclass
class BuyerResult:
    index: int
    order_id: str
    quantity: int
    answer: Answer
    started_s: float  # since the sale opened
    latency_s: float
    attempts: int = 0
    error: str | None = None
    # "sold out" proper (not "only N left" for a larger order)
    none_left: bool = False
    via_hold: bool = False
    cancelled: bool = False

    @property
    def finished_s(self) -> float:
        return self.started_s + self.latency_s


@dataclass
class SimulationResult:
    config: SimulationConfig
    event_id: str
    capacity: int
    shard_count: int
    results: list[BuyerResult]
    duration_s: float
    audit: Audit
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    inventory_stats: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None  # `--pipeline` figures (loadtest/pipeline.py)

    def count(self, answer: Answer) -> int:
        return sum(1 for r in self.results if r.answer is answer)

    @property
    def tickets_sold(self) -> int:
        """Tickets bought during the sale (cancelled ones included: they were sold, then returned)."""
        return sum(r.quantity for r in self.results if r.answer is Answer.SOLD)

    @property
    def sellout_s(self) -> float | None:
        """Seconds from the opening of the sale to the last successful purchase."""
        done = [r.finished_s for r in self.results if r.answer is Answer.SOLD]
        return max(done) if done else None

    def latency_ms(self, answers: tuple[Answer, ...] | None = None) -> dict[str, float]:
        values = sorted(r.latency_s * 1000 for r in self.results if answers is None or r.answer in answers)
        return percentiles(values)

    def report(self) -> dict[str, Any]:
        sold_orders = self.count(Answer.SOLD)
        sellout = self.sellout_s
        # The selling window ends with the last sale when everything sold; otherwise tickets
        # were still there for the whole run, so the window is the whole run.
        window = sellout if sellout and self.tickets_sold >= self.capacity else self.duration_s
        return {
            "event_id": self.event_id,
            "strategy": self.config.strategy.value,
            "commit": CommitMode.GUARDED_BATCH.value if self.config.strategy is Strategy.SHARDED else self.config.commit.value,
            "capacity": self.capacity,
            "shards": self.shard_count,
            "buyers": len(self.results),
            "concurrency": self.config.concurrency,
            "instances": self.config.instances,
            "max_quantity": self.config.max_quantity,
            "deadline_s": self.config.deadline_s,
            "seed": self.config.seed,
            "tickets_sold": self.tickets_sold,
            "orders_confirmed": sold_orders,
            "sold_out": self.count(Answer.SOLD_OUT),
            "refused": self.count(Answer.REFUSED),
            "errors": self.count(Answer.ERROR),
            "errors_by_kind": self.errors_by_kind,
            "oversold": self.audit.figures.get("oversold", 0),
            "success_rate": round(sold_orders / len(self.results), 4) if self.results else 0.0,
            "duration_s": round(self.duration_s, 3),
            "throughput_per_s": round(len(self.results) / self.duration_s, 1) if self.duration_s else 0.0,
            "sellout_s": round(sellout, 3) if sellout else None,
            "sales_per_s": round(sold_orders / window, 1) if window else 0.0,
            "latency_ms": self.latency_ms(),
            "latency_ms_sold": self.latency_ms((Answer.SOLD,)),
            "latency_ms_sold_out": self.latency_ms((Answer.SOLD_OUT,)),
            "attempts_per_sale": round(
                sum(r.attempts for r in self.results if r.answer is Answer.SOLD) / sold_orders, 2
            ) if sold_orders else 0.0,
            "holds": sum(1 for r in self.results if r.via_hold or r.answer is Answer.HELD_THEN_EXPIRED),
            "holds_confirmed": sum(1 for r in self.results if r.via_hold and r.answer is Answer.SOLD),
            "holds_expired": self.count(Answer.HELD_THEN_EXPIRED),
            "orders_cancelled": sum(1 for r in self.results if r.cancelled),
            "inventory_trigger": self.inventory_stats,
            "pipeline": self.pipeline,
            "audit": {"ok": self.audit.ok, "problems": self.audit.problems, "figures": self.audit.figures},
        }


def percentiles(sorted_values: list[float]) -> dict[str, float]:
    if not sorted_values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}

    def at(q: float) -> float:
        return round(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))], 1)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(sorted_values[-1], 1)}


def early_sold_out(results: list[BuyerResult]) -> int:
    """Buyers told "sold out" although tickets remained: their answer came before another
    purchase had even started that then succeeded. (The simulator returns no tickets, so
    stock only goes down during a run.)"""
    sales_started = sorted(r.started_s for r in results if r.answer is Answer.SOLD)
    if not sales_started:
        return 0
    last_sale_start = sales_started[-1]
    return sum(1 for r in results if r.none_left and r.finished_s < last_sale_start)


def run_simulation(
    db: firestore.Client,
    config: SimulationConfig,
    *,
    on_answer: Callable[[BuyerResult], None] | None = None,
    purchase: Callable[..., PurchaseResult] = purchase_tickets,
    users: Sequence[str] | None = None,
    pipeline: SalePipeline | None = None,
) -> SimulationResult:
    """Create a fresh event, run the buyers, audit the database. With ``pipeline``, the
    messaging pipeline runs during the sale and is drained and audited after it.

    ``purchase`` is how a buyer buys: the library by default, or any callable with the same
    signature and errors (``loadtest.via_api.ApiPurchaser`` goes through the HTTP API).
    ``users`` names the buyers (buyer i is ``users[i]``; default ``sim-<run>-<i>``), e.g. the
    uids of ID tokens minted before the sale.
    """
    if users is not None and len(users) < config.buyers:
        raise errors.InvalidRequest(f"{config.buyers} buyers need as many user ids, got {len(users)}")
    rng = random.Random(config.seed)
    single = config.strategy is Strategy.SINGLE_DOCUMENT
    shards = 1 if single else config.shards
    event = create_event(
        db,
        name=f"Flash sale {datetime.now(UTC):%H:%M:%S}",
        venue="Simulator Arena",
        starts_at=datetime.now(UTC) + timedelta(days=30),
        price=4_500,
        currency="EUR",
        capacity=config.tickets,
        per_order_max=config.max_quantity,
        per_user_limit=config.max_quantity,
        shard_count=shards,
    )
    mode = config.commit if single else CommitMode.GUARDED_BATCH
    # The naive baseline has no local coordination: every buyer behaves like its own client.
    routers = [ShardRouter(exclusive=not single) for _ in range(config.instances)]
    for r in routers:
        r.learn_event(event)
    run = secrets.token_hex(3)
    names = users if users is not None else [f"sim-{run}-{i:05d}" for i in range(config.buyers)]
    plan = [
        (i, names[i], f"buy-{i}", rng.randint(1, config.max_quantity), rng.randrange(2**32))
        for i in range(config.buyers)
    ]
    mixed = config.hold_share > 0 or config.cancel_share > 0
    if pipeline is not None:
        pipeline.before_sale(event.id, [user for _, user, *_ in plan])
    background = _start_worker(run, pipeline) if (config.worker or mixed or pipeline is not None) else None
    results: list[BuyerResult] = []
    kinds: dict[str, int] = {}
    lock = threading.Lock()
    opened = time.perf_counter()

    def buy(user: str, key: str, quantity: int, choice: random.Random, router: ShardRouter) -> tuple[Answer, str, int, bool]:
        """One buyer's journey: buy, or hold then confirm or walk away; maybe cancel after."""
        if choice.random() < config.hold_share:
            hold = hold_tickets(db, event.id, user, quantity, key, ttl_s=config.hold_ttl_s,
                                deadline_s=config.deadline_s, rng=choice, router=router)
            if choice.random() >= config.confirm_share:
                return Answer.HELD_THEN_EXPIRED, order_id_for(user, key), 0, True
            outcome = confirm_hold(db, hold.id, user, deadline_s=config.deadline_s)
            via_hold = True
        else:
            outcome = purchase(db, event.id, user, quantity, key, mode=mode, deadline_s=config.deadline_s,
                               rng=choice, router=router)
            via_hold = False
        if choice.random() < config.cancel_share:
            cancel_order(db, outcome.order.id, user)
        return Answer.SOLD, outcome.order.id, outcome.attempts, via_hold

    def buyer(item: tuple[int, str, str, int, int]) -> None:
        index, user, key, quantity, seed = item
        choice = random.Random(seed)
        started = time.perf_counter()
        attempts, error, none_left, via_hold, order_id = 0, None, False, False, order_id_for(user, key)
        try:
            answer, order_id, attempts, via_hold = buy(user, key, quantity, choice, routers[index % len(routers)])
        except errors.SoldOut as exc:
            answer, none_left = Answer.SOLD_OUT, not isinstance(exc, errors.NotEnoughTickets)
        except errors.ContentionTimeout as exc:
            answer, error = Answer.ERROR, type(exc).__name__
        except errors.BoxofficeError as exc:
            answer, error = Answer.REFUSED, exc.code
        except Exception as exc:  # noqa: BLE001 - an opaque failure is exactly what we count
            answer, error = Answer.ERROR, f"{type(exc).__name__}: {exc}"[:200]
        done = time.perf_counter()
        cancelled = answer is Answer.SOLD and config.cancel_share > 0 and _was_cancelled(db, order_id)
        result = BuyerResult(index, order_id, quantity, answer, started - opened, done - started,
                             attempts, error, none_left, via_hold, cancelled)
        with lock:
            results.append(result)
            if error and answer is Answer.ERROR:
                kind = error.split(":")[0]
                kinds[kind] = kinds.get(kind, 0) + 1
        if on_answer is not None:
            on_answer(result)

    try:
        with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="buyer") as pool:
            list(pool.map(buyer, plan))
        duration = time.perf_counter() - opened
        inventory_stats: dict[str, Any] | None = None
        if background is not None:
            inventory_stats = _drain_worker(db, background, event.id)
        ledger = {r.order_id: r.answer.value for r in results}
        audit = audit_sale(db, event.id, ledger, check_summary=background is not None)
        early = 0 if mixed else early_sold_out(results)
        if early:
            audit.problems.append(
                f"{early} buyers were told 'sold out' before a purchase that started later still got tickets"
            )
            audit.ok = False
        pipeline_figures = pipeline.after_sale(event.id, audit.problems, background) if pipeline is not None else None
    finally:
        if background is not None:
            background.stop()
    audit.ok = not audit.problems
    results.sort(key=lambda r: r.index)
    return SimulationResult(config, event.id, event.capacity, event.shard_count, results, duration, audit, kinds,
                            inventory_stats, pipeline_figures)


def _was_cancelled(db: firestore.Client, order_id: str) -> bool:
    doc = order_ref(db, order_id).get().to_dict() or {}
    return int(doc.get("cancelled_quantity", 0)) > 0


INVENTORY_PARTS = ("inventory-trigger", "hold-sweeper")
# The simulator's holds live seconds, not minutes: sweep them often.
SIM_HOLD_SWEEP_S = "0.5"
WORKER_READY_S = 120.0


def _start_worker(run: str, pipeline: SalePipeline | None) -> Supervisor:
    """`boxoffice worker` as production would run it: the inventory trigger (summary, notices),
    the hold sweeper and, with ``pipeline``, the relay and subscribers, each an OS process of its
    own beside the buyers' process. Returns once every part is up, so the sale does not race
    the parts' start-up."""

    env = dict(os.environ, BOXOFFICE_HOLD_SWEEP_S=SIM_HOLD_SWEEP_S)
    parts = list(INVENTORY_PARTS)
    if pipeline is not None:
        env.update(pipeline.worker_env())
        parts += pipeline.parts
    worker = Supervisor(parts, state_dir=em.default_state_dir(), worker_id=f"sim-{run}", env=env).start()
    if not worker.wait_ready(WORKER_READY_S):
        worker.stop()
        raise RuntimeError(f"the worker's parts did not start within {WORKER_READY_S:.0f} s: {worker.view()}")
    return worker


def _drain_worker(db: firestore.Client, worker: Supervisor, event_id: str) -> dict[str, Any]:
    """Release what holds remain (they would expire within ``hold_ttl_s``), then wait until
    the trigger has reflected every change; return its lag and write-rate figures."""
    while release_expired_holds(db, now=datetime.now(UTC) + timedelta(days=1)):
        pass
    # "Caught up" is judged from the database, not from the trigger's queue (a batch in flight,
    # or a change the listener has not delivered yet, leaves the queue empty): the summary must
    # reflect the newest shard commit. Bounded: an audit failure, not a hang, if it never does.
    wait_until(lambda: not worker.part_status("inventory-trigger").get("pending_events")
               and _summary_reflects_shards(db, event_id), timeout_s=90, poll_s=0.5)
    status = worker.fresh_part_status("inventory-trigger")
    return {k: v for k, v in status.items() if k not in ("alive", "pending_events")}


def _summary_reflects_shards(db: firestore.Client, event_id: str) -> bool:
    summary = (event_ref(db, event_id).get().to_dict() or {}).get("summary") or {}
    newest = max((s.update_time for s in inventory_col(db, event_id).stream()), default=None)
    return is_reflected(summary, newest)
