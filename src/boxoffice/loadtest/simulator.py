"""The flash-sale simulator: many concurrent buyers racing for few tickets, then an audit.

Each buyer is one purchase (through the same ``purchase_tickets`` a real client calls) on a
thread of a pool as wide as ``concurrency``. With ``instances`` N > 1 the buyers are spread over
N real OS processes (app instances) that open the sale together, ``concurrency / N`` threads
each. The queued strategy (the product) needs the event's allocator: the simulator starts
``allocators`` allocator processes (`boxoffice worker --only allocator`) for the run.

Every answer is classified as a sale, a "sold out" (including "not enough tickets left"), a
refusal by another rule, or an error (no answer in time, or anything unexpected): the last must
stay at zero. Afterwards it audits the database, reads each request's server arrival time from
its answer document and counts FIFO violations (``domain.allocation.fifo_violations``), and
counts the allocator's commits behind the sales (``sales_per_commit``).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain import errors
from boxoffice.domain.allocation import Answered, fifo_violations
from boxoffice.domain.availability import is_reflected
from boxoffice.domain.model import hold_id_for, order_id_for
from boxoffice.loadtest.baselines import CommitMode, purchase_directly
from boxoffice.loadtest.sale_audit import Audit, audit_sale
from boxoffice.runtime import emulators as em
from boxoffice.runtime.allocator import AllocatorProcesses
from boxoffice.runtime.supervisor import Supervisor
from boxoffice.runtime.worker import wait_until
from boxoffice.services.cancellations import cancel_order
from boxoffice.services.events import create_event
from boxoffice.services.holds import confirm_hold, hold_tickets, release_expired_holds
from boxoffice.services.purchasing import PurchaseResult, purchase_tickets
from boxoffice.store.documents import event_ref, inventory_col, order_ref
from boxoffice.store.requests import REQUESTS

if TYPE_CHECKING:
    from boxoffice.loadtest.sale_pipeline import SalePipeline


class Strategy(StrEnum):
    QUEUED = "queued"  # the product: admission queue + batch allocator
    DIRECT_SHARDED = "direct-sharded"  # baseline: each buyer commits its own purchase on a shard
    SINGLE_DOCUMENT = "single-document"  # baseline: each buyer commits its own purchase on one document


@dataclass(frozen=True)
class SimulationConfig:
    buyers: int = 2000
    tickets: int = 500
    concurrency: int = 200
    max_quantity: int = 1
    shards: int | None = None  # None: the event's default for its capacity
    strategy: Strategy = Strategy.QUEUED
    # How the single-document baseline commits; the direct-sharded one uses guarded batches.
    commit: CommitMode = CommitMode.TRANSACTION
    deadline_s: float = 10.0
    seed: int | None = None
    # Buyers are spread over this many app instances: 1 is this process, N > 1 are N OS processes.
    instances: int = 1
    # Allocator processes the simulator starts for the queued strategy (one holds the lease,
    # the others stand by); 0 when allocators already run (`boxoffice worker`).
    allocators: int = 1
    # The real-time inventory mix: a share of buyers hold (a cart) instead of buying at once;
    # of those, a share confirm and the rest let the hold expire; a share of all orders are
    # then cancelled. With any of these, the inventory worker runs during the sale.
    hold_share: float = 0.0
    confirm_share: float = 0.5
    cancel_share: float = 0.0
    hold_ttl_s: float = 2.0
    worker: bool = False
    # Ticket types (``typed_event``): three types, cheap / mid / premium, 60/30/10% of the
    # tickets; ``seated`` puts each in a section of a seat map. Buyers mostly want 2 cheap seats.
    types: bool = False
    seated: bool = False

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
        if not 1 <= self.instances <= self.concurrency:
            problems.append("instances must be between 1 and the concurrency")
        if not 0 <= self.allocators <= 8:
            problems.append("allocators must be between 0 and 8")
        if self.deadline_s <= 0:
            problems.append("deadline must be positive")
        for name in ("hold_share", "confirm_share", "cancel_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name.replace('_', '-')} must be between 0 and 1")
        if self.hold_ttl_s <= 0:
            problems.append("hold-ttl must be positive")
        if (self.types or self.seated) and (self.strategy is not Strategy.QUEUED or self.tickets < 10):
            problems.append("--types/--seated sell through the allocator (queued strategy), at least 10 tickets")
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
    instance: int = 0
    type_id: str | None = None  # --types / --seated: the type asked for
    # refused "sold out" by the app instance from the event's summary, without queueing (no
    # request document); its arrival for the FIFO check: when the instance read the summary
    at_instance: bool = False
    seen_at: float = 0.0
    hold_id: str = ""  # the hold the buyer asked for first (granted or not)

    @property
    def request_id(self) -> str:
        """The request the allocator answered first: the hold for a buyer who asked to hold (a
        confirmed hold's order id derives from the hold, not from the key), else the order."""
        if self.hold_id:
            return self.hold_id
        return "h_" + self.order_id[2:] if self.answer is Answer.HELD_THEN_EXPIRED else self.order_id

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
    pipeline: dict[str, Any] | None = None  # `--pipeline` figures (loadtest/sale_pipeline.py)
    queue: dict[str, Any] | None = None  # queued strategy: FIFO and commit figures (``queue_figures``)
    typed: dict[str, Any] | None = None  # --types / --seated: per type, seats, adjacency (``typed_figures``)

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
            "commit": {Strategy.QUEUED: "allocator", Strategy.DIRECT_SHARDED: CommitMode.GUARDED_BATCH.value}.get(
                self.config.strategy, self.config.commit.value),
            "capacity": self.capacity,
            "shards": self.shard_count,
            "buyers": len(self.results),
            "concurrency": self.config.concurrency,
            "instances": self.config.instances,
            "allocators": self.config.allocators if self.config.strategy is Strategy.QUEUED else 0,
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
            "fifo_violations": (self.queue or {}).get("fifo_violations"),
            "sales_per_commit": (self.queue or {}).get("sales_per_commit"),
            "queue": self.queue,
            "ticket_types": self.typed,
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


Purchase = Callable[..., PurchaseResult]
PlanItem = tuple[int, str, str, int, int]  # index, user, key, quantity, seed


def run_simulation(
    db: firestore.Client,
    config: SimulationConfig,
    *,
    on_answer: Callable[[BuyerResult], None] | None = None,
    purchase: Purchase | None = None,
    users: Sequence[str] | None = None,
    pipeline: SalePipeline | None = None,
) -> SimulationResult:
    """Create a fresh event, run the buyers, audit the database. With ``pipeline``, the
    messaging pipeline runs during the sale and is drained and audited after it.

    ``purchase`` is how a buyer buys: the strategy's library call by default, or any callable
    with the same signature and errors (``loadtest.via_api.ApiPurchaser`` goes through the HTTP
    API; the buyers then run in this process whatever ``instances`` says).
    ``users`` names the buyers (buyer i is ``users[i]``; default ``sim-<run>-<i>``), e.g. the
    uids of ID tokens minted before the sale.
    """
    if users is not None and len(users) < config.buyers:
        raise errors.InvalidRequest(f"{config.buyers} buyers need as many user ids, got {len(users)}")
    rng = random.Random(config.seed)
    single = config.strategy is Strategy.SINGLE_DOCUMENT
    typed = config.types or config.seated
    if typed:
        types, seats = typed_event(config.tickets, seated=config.seated)
        event = create_event(db, name=f"Seated sale {datetime.now(UTC):%H:%M:%S}" if config.seated else
                             f"Typed sale {datetime.now(UTC):%H:%M:%S}", venue="Simulator Arena",
                             starts_at=datetime.now(UTC) + timedelta(days=30), currency="EUR",
                             per_order_max=max(4, config.max_quantity), types=types, seats=seats)
    else:
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
            shard_count=1 if single else config.shards,
        )
    run = secrets.token_hex(3)
    names = users if users is not None else [f"sim-{run}-{i:05d}" for i in range(config.buyers)]
    plan: list[PlanItem] = []
    for i in range(config.buyers):
        quantity, seed = rng.randint(1, config.max_quantity), rng.randrange(2**32)
        if typed:
            quantity = typed_choice(random.Random(seed))[1]
        plan.append((i, names[i], f"buy-{i}", quantity, seed))
    mixed = config.hold_share > 0 or config.cancel_share > 0
    if pipeline is not None:
        pipeline.before_sale(event.id, [user for _, user, *_ in plan])
    queued = config.strategy is Strategy.QUEUED
    allocators = (AllocatorProcesses.from_environment(count=config.allocators)
                  if queued and config.allocators else nullcontext())
    results: list[BuyerResult] = []
    kinds: dict[str, int] = {}
    with allocators:
        background = _start_worker(run, pipeline) if (config.worker or mixed or pipeline is not None) else None
        try:
            opened = time.time()
            if config.instances > 1 and purchase is None:
                results = _run_instances(event.id, plan, config)
                for r in results:
                    if on_answer is not None:
                        on_answer(r)
            else:
                results = run_buyers(db, event.id, plan, config, purchase, on_answer, opened)
            duration = max((r.finished_s for r in results), default=0.0)
            inventory_stats: dict[str, Any] | None = None
            if background is not None:
                inventory_stats = _drain_worker(db, background, event.id)
            audit, queue = _audit(db, event.id, results, duration, config, check_summary=background is not None)
            typed_report = typed_figures(db, event.id, results) if typed else None
            pipeline_figures = None
            if pipeline:
                assert background is not None  # a pipeline run always starts the worker (above)
                pipeline_figures = pipeline.after_sale(event.id, audit.problems, background)
        finally:
            if background is not None:
                background.stop()
    for r in results:
        if r.answer is Answer.ERROR and r.error:
            kind = r.error.split(":")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
    audit.ok = not audit.problems
    results.sort(key=lambda r: r.index)
    return SimulationResult(config, event.id, event.capacity, event.shard_count, results, duration, audit, kinds,
                            inventory_stats, pipeline_figures, queue, typed_report)


def _audit(db: firestore.Client, event_id: str, results: list[BuyerResult], duration: float,
           config: SimulationConfig, *, check_summary: bool) -> tuple[Audit, dict[str, Any] | None]:
    """The database audit, with what only the sale's ledger and answer documents can tell."""
    mixed = config.hold_share > 0 or config.cancel_share > 0
    queued = config.strategy is Strategy.QUEUED
    ledger = {r.order_id: r.answer.value for r in results}
    audit = audit_sale(db, event_id, ledger, check_summary=check_summary)
    queue = queue_figures(db, event_id, results, duration, fair=not mixed) if queued else None
    if queue and queue["fifo_violations"]:
        audit.problems.append(f"{queue['fifo_violations']} buyers were refused for lack of stock although a "
                              "later arrival got tickets (FIFO violations)")
    if queue and queue["unanswered"]:
        audit.problems.append(f"{queue['unanswered']} requests have no answer document")
    early = 0 if mixed or queued else early_sold_out(results)
    if early:
        audit.problems.append(
            f"{early} buyers were told 'sold out' before a purchase that started later still got tickets"
        )
    return audit, queue


def library_purchase(config: SimulationConfig) -> Purchase:
    """The library call a buyer of ``config``'s strategy makes."""
    if config.strategy is Strategy.QUEUED:
        def queued(db: firestore.Client, event_id: str, user: str, quantity: int, key: str, *,
                   deadline_s: float, rng: random.Random | None = None) -> PurchaseResult:
            return purchase_tickets(db, event_id, user, quantity, key, deadline_s=deadline_s)

        return queued
    mode = config.commit if config.strategy is Strategy.SINGLE_DOCUMENT else CommitMode.GUARDED_BATCH

    def direct(db: firestore.Client, event_id: str, user: str, quantity: int, key: str, *,
               deadline_s: float, rng: random.Random | None = None) -> PurchaseResult:
        order, attempts = purchase_directly(db, event_id, user, quantity, key, mode=mode, deadline_s=deadline_s,
                                            rng=rng)
        return PurchaseResult(order, replayed=False, attempts=attempts)

    return direct


def run_buyers(
    db: firestore.Client,
    event_id: str,
    plan: Sequence[PlanItem],
    config: SimulationConfig,
    purchase: Purchase | None,
    on_answer: Callable[[BuyerResult], None] | None,
    opened: float,
    *,
    concurrency: int | None = None,
    instance: int = 0,
) -> list[BuyerResult]:
    """The buyers of one app instance, ``concurrency`` at a time; times are seconds since ``opened``."""
    buy_once = purchase or library_purchase(config)
    results: list[BuyerResult] = []
    lock = threading.Lock()

    def buy(user: str, key: str, quantity: int, choice: random.Random, asked: dict[str, str]) -> tuple[
            Answer, str, int, bool]:
        """One buyer's journey: buy, or hold then confirm or walk away; maybe cancel after."""
        typed = config.types or config.seated
        types = dict([typed_choice(choice)]) if typed else None
        if choice.random() < config.hold_share:
            asked["hold"] = hold_id_for(user, key)
            hold = hold_tickets(db, event_id, user, None if typed else quantity, key, ttl_s=config.hold_ttl_s,
                                deadline_s=config.deadline_s, types=types)
            if choice.random() >= config.confirm_share:
                return Answer.HELD_THEN_EXPIRED, order_id_for(user, key), 0, True
            outcome = confirm_hold(db, hold.id, user, deadline_s=config.deadline_s)
            via_hold = True
        elif typed:
            outcome = purchase_tickets(db, event_id, user, None, key, deadline_s=config.deadline_s, types=types)
            via_hold = False
        else:
            outcome = buy_once(db, event_id, user, quantity, key, deadline_s=config.deadline_s, rng=choice)
            via_hold = False
        if choice.random() < config.cancel_share:
            cancel_order(db, outcome.order.id, user)
        return Answer.SOLD, outcome.order.id, outcome.attempts, via_hold

    def buyer(item: PlanItem) -> None:
        index, user, key, quantity, seed = item
        choice = random.Random(seed)
        started = time.time()
        attempts, error, none_left, via_hold, order_id = 0, None, False, False, order_id_for(user, key)
        at_instance, seen_at = False, 0.0
        asked: dict[str, str] = {}
        try:
            answer, order_id, attempts, via_hold = buy(user, key, quantity, choice, asked)
        except errors.SoldOut as exc:
            answer, none_left = Answer.SOLD_OUT, not isinstance(exc, errors.NotEnoughTickets) and getattr(
                exc, "available", 0) == 0
            at_instance = exc.at_instance
            # its arrival: the server time at which the instance read the summary
            seen_at = exc.seen_at.timestamp() if exc.seen_at is not None else started
        except errors.ContentionTimeout as exc:
            answer, error = Answer.ERROR, type(exc).__name__
        except errors.BoxofficeError as exc:
            answer, error = Answer.REFUSED, exc.code
        except Exception as exc:  # noqa: BLE001 - an opaque failure is exactly what we count
            answer, error = Answer.ERROR, f"{type(exc).__name__}: {exc}"[:200]
        done = time.time()
        cancelled = answer is Answer.SOLD and config.cancel_share > 0 and _was_cancelled(db, order_id)
        result = BuyerResult(index, order_id, quantity, answer, started - opened, done - started,
                             attempts, error, none_left, via_hold, cancelled, instance,
                             typed_choice(random.Random(seed))[0] if config.types or config.seated else None,
                             at_instance, seen_at, hold_id=asked.get("hold", ""))
        with lock:
            results.append(result)
        if on_answer is not None:
            on_answer(result)

    with ThreadPoolExecutor(max_workers=concurrency or config.concurrency, thread_name_prefix="buyer") as pool:
        list(pool.map(buyer, plan))
    return results


def _run_instances(event_id: str, plan: Sequence[PlanItem], config: SimulationConfig) -> list[BuyerResult]:
    """Run the buyers in ``config.instances`` OS processes that open the sale at the same moment."""
    ctx = multiprocessing.get_context("spawn")  # no gRPC state forked into the children
    n = config.instances
    ready, results_q = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    opened = ctx.Value("d", 0.0)
    share = [config.concurrency // n + (1 if i < config.concurrency % n else 0) for i in range(n)]
    procs = [ctx.Process(target=_instance_main, name=f"instance-{i}",
                         args=(i, dict(os.environ), event_id, list(plan[i::n]), config, share[i], ready, go,
                               opened, results_q))
             for i in range(n)]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=120)  # every instance has its clients and threads ready
        opened.value = time.time()
        go.set()
        results: list[BuyerResult] = []
        for _ in procs:
            results += results_q.get(timeout=600)
        return results
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


def _instance_main(index: int, env: dict[str, str], event_id: str, plan: list[PlanItem], config: SimulationConfig,
                   concurrency: int, ready: Any, go: Any, opened: Any, results: Any) -> None:
    """One app instance (a child process): its own clients, its own buyers."""
    os.environ.update(env)
    from boxoffice.runtime.emulators import client_from_environment
    from boxoffice.store.admission_queue import admission_queue

    db = client_from_environment()
    admission_queue(db.project).ensure_queue(event_id)
    ready.put(index)
    go.wait()
    results.put(run_buyers(db, event_id, plan, config, None, None, opened.value, concurrency=concurrency,
                           instance=index))


def queue_figures(db: firestore.Client, event_id: str, results: Sequence[BuyerResult], duration_s: float,
                  *, fair: bool) -> dict[str, Any]:
    """From the answer documents: server arrival order (FIFO violations), and the allocator's
    commits behind the answers (answers and sales per commit, commits a second)."""
    docs = {s.id: s.to_dict() or {} for s in
            db.collection(REQUESTS).where(filter=FieldFilter("event_id", "==", event_id)).stream()}
    answered: dict[str | None, list[Answered]] = {}
    unanswered = 0
    at_instance = 0
    for r in results:
        doc = docs.get(r.request_id)
        if r.answer is Answer.SOLD_OUT and (r.at_instance or doc is None):
            # Refused by its app instance from the summary, never queued (the library says so;
            # through the API a "sold out" without an answer document can only be that, since the
            # allocator writes one for every refusal). The library's are judged by the server time
            # at which the instance read the summary: a violation if any request that arrived
            # after that still got tickets. Through the API the client does
            # not know when its request reached the instance (it may wait seconds in the server's
            # queue), so those are counted, not judged: the summary showed nothing left when the
            # instance read it.
            at_instance += 1
            if r.at_instance:
                answered.setdefault(r.type_id, []).append(Answered(r.seen_at, r.quantity, False, True, r.none_left))
            continue
        if doc is None:
            unanswered += r.answer in (Answer.SOLD, Answer.SOLD_OUT, Answer.HELD_THEN_EXPIRED)
            continue
        arrived = doc.get("arrived_at")
        if arrived is not None and r.answer in (Answer.SOLD, Answer.SOLD_OUT):
            # By ticket type: a buyer refused one type is not overtaken by a later buyer of another.
            answered.setdefault(r.type_id, []).append(Answered(arrived.timestamp(), r.quantity, r.answer is Answer.SOLD,
                                                               r.answer is Answer.SOLD_OUT, r.none_left))
    batches: dict[str, int] = {}
    sale_batches: set[str] = set()
    for doc in docs.values():
        batch = doc.get("batch")
        if batch:
            batches[batch] = batches.get(batch, 0) + 1
            if doc.get("outcome") in ("order", "hold"):
                sale_batches.add(batch)
    sales = sum(1 for d in docs.values() if d.get("outcome") == "order")
    sizes = sorted(batches.values())
    return {
        "requests_answered": len(docs),
        "unanswered": unanswered,
        "sold_out_at_instance": at_instance,
        "fifo_violations": sum(fifo_violations(group) for group in answered.values()) if fair else None,
        "allocator_commits": len(batches),
        "commits_with_sales": len(sale_batches),
        "answers_per_commit": round(len(docs) / len(batches), 1) if batches else 0.0,
        "sales_per_commit": round(sales / len(sale_batches), 1) if sale_batches else 0.0,
        "largest_commit": sizes[-1] if sizes else 0,
        "commits_per_s": round(len(batches) / duration_s, 1) if duration_s else 0.0,
    }


TYPE_MIX = (("cheap", 0.6, 2500), ("mid", 0.3, 4500), ("premium", 0.1, 9000))
SEATS_PER_ROW = 20


def typed_event(tickets: int, *, seated: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Three types splitting ``tickets`` 60/30/10% (JSON forms for ``create_event``); seated:
    a section per type, premium at the front, rows of 20 seats (the last row may be shorter)."""
    sizes = [max(1, int(tickets * share)) for _, share, _ in TYPE_MIX]
    sizes[0] += tickets - sum(sizes)
    types = {"types": [{"id": t, "name": t.title(), "price": price} | ({} if seated else {"capacity": size})
                       for (t, _, price), size in zip(TYPE_MIX, sizes, strict=True)]}
    if not seated:
        return types, None
    sections = []
    for (t, _, _), size in reversed(list(zip(TYPE_MIX, sizes, strict=True))):
        rows = [{"id": f"R{r + 1}", "first": 1, "last": min(SEATS_PER_ROW, size - r * SEATS_PER_ROW), "type": t}
                for r in range(-(-size // SEATS_PER_ROW))]
        sections.append({"id": t, "rows": rows})
    return types, {"sections": sections}


def typed_choice(choice: random.Random) -> tuple[str, int]:
    """A buyer of the typed sale: most want 2 (adjacent) cheap seats, some 1-4 mid, a few 1-2 premium."""
    roll = choice.random()
    if roll < 0.6:
        return "cheap", 2
    if roll < 0.85:
        return "mid", choice.randint(1, 4)
    return "premium", choice.randint(1, 2)


def typed_figures(db: firestore.Client, event_id: str, results: Sequence[BuyerResult]) -> dict[str, Any]:
    """Per type: tickets sold, orders, buyers refused for lack of stock; seats sold; and the
    adjacency success rate: orders of N >= 2 seats that got N adjacent seats in one row."""
    per_type: dict[str, dict[str, int]] = {}
    for r in results:
        row = per_type.setdefault(r.type_id or "?", {"buyers": 0, "orders": 0, "tickets_sold": 0, "sold_out": 0})
        row["buyers"] += 1
        row["orders"] += r.answer is Answer.SOLD
        row["tickets_sold"] += r.quantity if r.answer is Answer.SOLD else 0
        row["sold_out"] += r.answer is Answer.SOLD_OUT
    seats_sold, multi, together = 0, 0, 0
    for snap in db.collection("orders").where(filter=FieldFilter("event_id", "==", event_id)).stream():
        for line in (snap.to_dict() or {}).get("lines", ()):
            seats = line.get("seat_ids") or []
            seats_sold += len(seats)
            if len(seats) >= 2:
                multi += 1
                together += seats_adjacent(seats)
    return {"by_type": per_type, "seats_sold": seats_sold, "multi_seat_orders": multi, "seated_together": together,
            "adjacency_rate": round(together / multi, 4) if multi else None}


def seats_adjacent(seat_ids: Sequence[str]) -> bool:
    """All in one row of one section, numbers consecutive."""
    parts = sorted((s.split(":")[0], s.split(":")[1], int(s.split(":")[2])) for s in seat_ids)
    return len({(a, b) for a, b, _ in parts}) == 1 and all(
        y[2] == x[2] + 1 for x, y in itertools.pairwise(parts))


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
