"""`boxoffice simulate --via-api`: the flash sale through the HTTP API, and its overhead.

The sale is the simulator's own (``run_simulation``): same event set-up, same buyers, same
classification and the same audit of Firestore. Only the purchase call changes: each buyer
POSTs ``/v1/purchases`` with its own Firebase ID token (``ApiPurchaser``), and every problem
code is turned back into the domain error the library would have raised, so a "sold out"
over HTTP counts exactly like a ``SoldOut`` from the library.

Set-up (``running_api_server``): the API runs as its own process (``uvicorn ... --factory``,
``--api-workers`` processes, default 1) on a free 127.0.0.1 port, against the same Firestore
emulator and the Firebase Auth emulator, as it would be deployed: its own interpreter and GIL,
not threads sharing the simulator's. Users and their ID tokens are minted in the Auth emulator
before the sale opens (not timed), and each buyer's HTTP client is built before the sale too.

``compare`` runs the same workload twice in one command, library first then API, each on a
fresh event, and reports answers per second, purchase latency and the overhead ratios.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from google.cloud import firestore

import boxoffice
from boxoffice.domain import errors
from boxoffice.domain.model import Order, OrderStatus
from boxoffice.loadtest.api_client import ApiReply, purchase_via_api
from boxoffice.loadtest.report import write_json
from boxoffice.loadtest.simulator import (
    BuyerResult,
    SimulationConfig,
    SimulationResult,
    Strategy,
    run_simulation,
)
from boxoffice.log import kv
from boxoffice.runtime import emulators as em
from boxoffice.runtime.auth_emulator import running_auth_emulator
from boxoffice.runtime.emulator_users import mint_tokens
from boxoffice.runtime.emulators import default_state_dir
from boxoffice.services.purchasing import DEFAULT_DEADLINE_S, PurchaseResult

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Starlette runs a sync endpoint on anyio's worker threads: at most this many purchases are in
# progress per API process at once, whatever the number of connections (anyio's default).
API_THREADS_PER_WORKER = 40


class ApiError(Exception):
    """An answer of the API that no domain error stands for (401, 5xx, a wrong body): the
    simulator counts it as an error, as it would any unexpected failure of the library."""


def _error_classes() -> dict[str, type[errors.BoxofficeError]]:
    found: dict[str, type[errors.BoxofficeError]] = {}
    todo: list[type[errors.BoxofficeError]] = [errors.BoxofficeError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


_BY_CODE = _error_classes()


def error_for(reply: ApiReply) -> Exception:
    """The exception the library would have raised for a refused purchase.

    The problem's ``code`` names the domain error (``sold_out`` -> ``SoldOut``,
    ``not_enough_tickets`` -> ``NotEnoughTickets``, ``contention_timeout`` ->
    ``ContentionTimeout``...); any other 503 (the server too busy to check a sign-in) is a
    ``ContentionTimeout`` too. Everything else (401, 500, an unknown code) is an ``ApiError``.
    """
    detail = str(reply.body.get("detail", ""))[:200]
    cls = _BY_CODE.get(reply.code)
    if cls is None and reply.status == 503:
        cls = errors.ContentionTimeout
    if cls is None or cls is errors.BoxofficeError:
        return ApiError(f"HTTP {reply.status} {reply.code}: {detail}")
    # The domain errors' constructors take their own fields (event id, counts); the problem
    # carries only the message, which is all the simulator reads.
    exc = cls.__new__(cls)
    errors.BoxofficeError.__init__(exc, detail or reply.code)
    return exc


def order_from_body(body: Mapping[str, Any]) -> Order:
    """The ``Order`` of a 201 body (``OrderOut``); allocations are not part of it."""
    return Order(
        id=str(body["id"]), event_id=str(body["event_id"]), user_id=str(body["user_id"]),
        quantity=int(body["quantity"]), unit_price=int(body["unit_price"]), currency=str(body["currency"]),
        allocations={}, idempotency_key=str(body["idempotency_key"]),
        ticket_ids=tuple(body["ticket_ids"]), status=OrderStatus(body["status"]),
        cancelled_quantity=int(body["cancelled_quantity"]),
    )


class ApiPurchaser:
    """A drop-in for ``purchase_tickets`` that buys through ``POST /v1/purchases``.

    ``tokens`` maps each buyer's user id to its ID token: the API takes the user from the token,
    so the order (whose id derives from uid + key) is the one the simulator's ledger expects.
    Library options (mode, deadline, rng, router) are the server's business and are ignored.
    ``attempts`` in the result is 1: the number of HTTP requests, not the server's retries.
    """

    def __init__(self, base_url: str, tokens: Mapping[str, str], *, connections: int = 1) -> None:
        self.base_url = base_url
        self.tokens = tokens
        # One keep-alive client per buyer in flight, built now rather than inside a timed request
        # (building an httpx client loads a TLS context: milliseconds of CPU each).
        self._clients = [httpx.Client(base_url=base_url, timeout=30.0) for _ in range(connections)]
        self._pool: queue.SimpleQueue[httpx.Client] = queue.SimpleQueue()
        for client in self._clients:
            self._pool.put(client)

    def __call__(self, db: Any, event_id: str, user_id: str, quantity: int, idempotency_key: str,
                 **_library_options: Any) -> PurchaseResult:
        http = self._pool.get()
        try:
            reply = purchase_via_api(self.base_url, self.tokens[user_id], event_id, quantity,
                                     idempotency_key, http=http)
        finally:
            self._pool.put(http)
        if not reply.ok:
            raise error_for(reply)
        try:
            order = order_from_body(reply.body)
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(f"HTTP {reply.status} with an unexpected body: {exc}") from None
        if order.user_id != user_id:
            raise ApiError(f"the API bought for {order.user_id!r}, not for the token's user {user_id!r}")
        return PurchaseResult(order, reply.replayed, attempts=1)

    def close(self) -> None:
        for client in self._clients:
            client.close()


# --------------------------------------------------------------------------- the API server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def running_api_server(firestore_host: str, auth_host: str, project: str, *, workers: int = 1,
                       timeout_s: float = 60.0) -> Iterator[str]:
    """Serve the API in a process of its own on a free port; yields its base URL.

    The process (uvicorn with ``create_app``, ``workers`` worker processes) talks to the given
    Firestore and Auth emulators. It is started in its own process group and stopped by its pid
    on exit (SIGTERM, then SIGKILL after 10 s). Its output goes to ``.boxoffice/api-server.log``.
    """
    port = _free_port()
    src = str(Path(boxoffice.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "FIRESTORE_EMULATOR_HOST": firestore_host,
        "FIREBASE_AUTH_EMULATOR_HOST": auth_host,
        "GOOGLE_CLOUD_PROJECT": project,
        "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
    }
    state = default_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    log_path = state / "api-server.log"
    command = [sys.executable, "-m", "uvicorn", "boxoffice.api.app:create_app", "--factory",
               "--host", HOST, "--port", str(port), "--workers", str(workers),
               "--log-level", "warning", "--no-access-log"]
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    base_url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(base_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the API server did not answer on {base_url}. Log {log_path}:\n{tail}")
            time.sleep(0.2)
        kv(log, logging.INFO, "api_server.started", pid=proc.pid, url=base_url, workers=workers)
        yield base_url
    finally:
        _stop(proc)


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    # Its own session: the group id is its pid, and holds only it and its uvicorn workers.
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def warm_up(base_url: str, workers: int) -> None:
    """Make every worker open its Firestore channel before the sale (a 404 read each, untimed)."""
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        for i in range(4 * workers):
            http.get(f"/v1/events/warm-up-{i}")


# --------------------------------------------------------------------------- the runs


@dataclass(frozen=True)
class ApiTarget:
    """Where the API runs for a via-API sale: its URL, the Auth emulator, the project."""

    base_url: str
    auth_host: str
    project: str
    workers: int = 1


def run_via_api(db: firestore.Client, config: SimulationConfig, target: ApiTarget, *,
                on_answer: Callable[[BuyerResult], None] | None = None) -> SimulationResult:
    """Mint one user and ID token per buyer (untimed), then run the sale through the API."""
    check_config(config)
    prefix = f"api-{secrets.token_hex(3)}"
    minted = mint_tokens(target.auth_host, target.project, config.buyers, prefix=prefix)
    purchaser = ApiPurchaser(target.base_url, dict(minted), connections=config.concurrency)
    try:
        return run_simulation(db, config, on_answer=on_answer, purchase=purchaser, users=[uid for uid, _ in minted])
    finally:
        purchaser.close()


def check_config(config: SimulationConfig) -> None:
    """What the API can run: sharded purchases only (holds and cancellations have no route yet)."""
    problems = []
    if config.strategy is not Strategy.SHARDED:
        problems.append("--via-api runs the sharded strategy only (the API always buys from shards)")
    if config.hold_share or config.cancel_share:
        problems.append("--via-api does not run holds or cancellations yet")
    if problems:
        raise errors.InvalidRequest("; ".join(problems))


def fair_config(config: SimulationConfig, api_workers: int) -> SimulationConfig:
    """The library run's config that matches the API: one shard router per API process
    (``instances`` = workers) and the deadline the API serves with."""
    return replace(config, instances=api_workers, deadline_s=DEFAULT_DEADLINE_S)


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The figures compared side by side."""
    return {
        "answers_per_s": report["throughput_per_s"],
        "p50_ms": report["latency_ms"]["p50"],
        "p99_ms": report["latency_ms"]["p99"],
        "p99_sold_ms": report["latency_ms_sold"]["p99"],
        "sold": report["tickets_sold"],
        "sold_out": report["sold_out"],
        "refused": report["refused"],
        "errors": report["errors"],
        "duration_s": report["duration_s"],
        "audit_ok": report["audit"]["ok"],
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def compare_reports(setup: dict[str, Any], library: dict[str, Any] | None, api: dict[str, Any]) -> dict[str, Any]:
    """The JSON report: set-up, both full reports, the headline figures and the overhead."""
    side = {"api": headline(api)}
    out: dict[str, Any] = {"setup": setup, "api": api}
    if library is not None:
        side = {"library": headline(library), **side}
        out["library"] = library
        lib, via = side["library"], side["api"]
        out["overhead"] = {
            "p99_ratio": _ratio(via["p99_ms"], lib["p99_ms"]),  # API p99 / library p99
            "p50_ratio": _ratio(via["p50_ms"], lib["p50_ms"]),
            "rps_ratio": _ratio(lib["answers_per_s"], via["answers_per_s"]),  # library rps / API rps
        }
    out["side_by_side"] = side
    out["ok"] = all(s["audit_ok"] and not s["errors"] for s in side.values())
    return out


def setup_of(config: SimulationConfig, workers: int, order: list[str]) -> dict[str, Any]:
    return {
        "buyers": config.buyers, "tickets": config.tickets, "concurrency": config.concurrency,
        "max_quantity": config.max_quantity, "shards": config.shards, "seed": config.seed,
        "deadline_s": config.deadline_s, "instances": config.instances,
        "api_workers": workers, "api_threads_per_worker": API_THREADS_PER_WORKER,
        "api_server": "uvicorn subprocess (create_app), 127.0.0.1, keep-alive httpx client per buyer in flight",
        "auth": "Firebase Auth emulator; one user lookup per new buyer in the API (cached 10 s)",
        "cpus": os.cpu_count(), "order": order,
    }


def compare(db: firestore.Client, config: SimulationConfig, target: ApiTarget, *, library: bool = True,
            on_phase: Callable[[str], Callable[[BuyerResult], None] | None] | None = None) -> dict[str, Any]:
    """Run the sale with the library (if ``library``) then through the API, on fresh events,
    with the same buyers, tickets, quantities (same seed) and concurrency; return the report.

    ``on_phase(name)`` is told when a run starts and may return an ``on_answer`` for it.
    """
    config = fair_config(config, target.workers)
    check_config(config)
    warm_up(target.base_url, target.workers)
    # The runs share the machine with whatever else runs on it: keep its load with the figures.
    load_before = os.getloadavg()[0]
    lib_report = None
    if library:
        lib_report = run_simulation(db, config, on_answer=on_phase("library") if on_phase else None).report()
    api_report = run_via_api(db, config, target, on_answer=on_phase("api") if on_phase else None).report()
    order = ["library", "api"] if library else ["api"]
    setup = setup_of(config, target.workers, order) | {
        "load_avg_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}
    return compare_reports(setup, lib_report, api_report)


# --------------------------------------------------------------------------- the command


def simulate_via_api(config: SimulationConfig, *, project: str, compare_library: bool, api_workers: int,
                     json_path: Path | None) -> dict[str, Any]:
    """What `boxoffice simulate --via-api [--compare-library]` does: find or start the
    emulators (Firestore, Auth), serve the API, run, print the figures side by side."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.table import Table


    out, err = Console(), Console(stderr=True)
    with em.running_stack(project, pubsub=False) as stack, running_auth_emulator(project) as auth, \
            running_api_server(stack.firestore_host, auth.host, project, workers=api_workers) as url:
        db = em.firestore_client(stack)
        target = ApiTarget(url, auth.host, project, api_workers)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err) as progress:

            def on_phase(name: str) -> Callable[[BuyerResult], None]:
                task = progress.add_task(f"flash sale via {name}", total=config.buyers)
                return lambda _result: progress.update(task, advance=1)

            figures = compare(db, config, target, library=compare_library, on_phase=on_phase)
    side = figures["side_by_side"]
    table = Table("", *side.keys(), title=f"{config.buyers} buyers, {config.tickets} tickets, concurrency "
                  f"{config.concurrency}, {api_workers} API worker(s)", title_justify="left")
    rows = [("answers/s", "answers_per_s", "{:.1f}"), ("p50 ms", "p50_ms", "{:.0f}"), ("p99 ms", "p99_ms", "{:.0f}"),
            ("p99 ms (sold)", "p99_sold_ms", "{:.0f}"), ("sold", "sold", "{}"), ("sold out", "sold_out", "{}"),
            ("refused", "refused", "{}"), ("errors", "errors", "{}"), ("duration s", "duration_s", "{:.2f}"),
            ("audit ok", "audit_ok", "{}")]
    for label, key, fmt in rows:
        table.add_row(label, *(fmt.format(s[key]) for s in side.values()))
    out.print(table)
    if "overhead" in figures:
        o = figures["overhead"]
        out.print(f"overhead of the API layer: p99 x{o['p99_ratio']} (API/library), p50 x{o['p50_ratio']}, "
                  f"throughput x{o['rps_ratio']} (library/API answers per second)")
    load = figures["setup"]["load_avg_1m"]
    out.print(f"machine load (1 min average) before {load['before']}, after {load['after']} "
              f"on {figures['setup']['cpus']} CPUs")
    for name in side:
        problems = figures[name]["audit"]["problems"]
        if problems:
            err.print(f"[red]audit of the {name} run failed[/red]: " + "; ".join(problems))
    if json_path:
        write_json(figures, json_path)
        out.print(f"report written to {json_path}")
    return figures
