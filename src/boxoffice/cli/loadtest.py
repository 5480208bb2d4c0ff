"""`boxoffice simulate` and `boxoffice bench`: flash sales and benchmarks on the emulators."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from boxoffice.cli.output import EXIT_AUDIT_FAILED, EXIT_INPUT, err, out
from boxoffice.cli.storefront import announce_dashboard
from boxoffice.domain import errors
from boxoffice.loadtest.baselines import CommitMode
from boxoffice.loadtest.bench import ROW_HEADERS, rows, run_bench
from boxoffice.loadtest.report import print_report, write_json, write_plot
from boxoffice.loadtest.sale_pipeline import SalePipeline
from boxoffice.loadtest.simulator import SimulationConfig, Strategy, run_simulation
from boxoffice.loadtest.via_api import simulate_via_api
from boxoffice.runtime import emulators as em


def _stack(project: str, pubsub: bool = True):  # type: ignore[no-untyped-def]
    """The emulators for a run. Pub/Sub always: purchases go through the admission queue. A
    SIGTERM ends the run like Ctrl-C, so the emulators and processes it started are stopped."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return em.running_stack(project, pubsub=pubsub)


def _sale_pipeline(stack, enabled: bool, workers: int = 1, capacity: bool = True):  # type: ignore[no-untyped-def]
    from contextlib import nullcontext


    return SalePipeline(em.firestore_client(stack), workers=workers, capacity=capacity) if enabled else nullcontext()


def simulate(
    buyers: int = typer.Option(2000, min=1, help="Concurrent buyers in the sale."),
    tickets: int = typer.Option(500, min=1, help="Tickets on sale."),
    concurrency: int = typer.Option(200, min=1, max=1000, help="Buyers in flight at once."),
    max_quantity: int = typer.Option(1, min=1, max=50, help="Each buyer asks for 1..Q tickets."),
    shards: int | None = typer.Option(None, min=1, max=200, help="Inventory shards (default: event default)."),
    strategy: str = typer.Option("queued", help="queued (admission queue + batch allocator) | direct-sharded | "
                                 "single-document (baselines: one purchase per commit)."),
    commit: str = typer.Option("transaction", help="single-document only: transaction | batch."),
    instances: int = typer.Option(1, min=1, help="App instances: N > 1 runs the buyers in N OS processes that open "
                                  "the sale together (concurrency / N threads each)."),
    allocators: int = typer.Option(1, min=0, max=8, help="Allocator processes started for the run (queued "
                                   "strategy; one holds the lease, the rest stand by). 0: use running ones."),
    deadline: float = typer.Option(10.0, min=0.1, help="Seconds a buyer keeps retrying under contention."),
    hold_share: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of buyers who hold (a cart) first."),
    confirm_share: float = typer.Option(0.5, min=0.0, max=1.0, help="Share of holders who confirm; the rest let the hold expire."),
    cancel_share: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of orders cancelled right after purchase."),
    hold_ttl: float = typer.Option(2.0, min=0.1, help="Seconds a simulated hold lasts."),
    worker: bool = typer.Option(False, "--worker", help="Run the inventory worker (summary, notices) during the sale; "
                                "on by itself with holds or cancellations."),
    seed: int | None = typer.Option(None, help="Random seed for quantities and backoff."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the JSON report to this file."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG of latencies and sales over time."),
    project: str = typer.Option("demo-boxoffice", help="Emulator project id."),
    via_api: bool = typer.Option(False, "--via-api", help="Buy through the HTTP API (served for the run, "
                                 "with the Auth emulator) instead of calling the library. Both runs then use one app "
                                 "instance per API worker (not --instances) and the library's 10 s deadline."),
    compare_library: bool = typer.Option(False, "--compare-library", help="With --via-api: run the same sale "
                                         "with the library first and print both side by side with the overhead."),
    api_workers: int = typer.Option(1, min=1, max=8, help="--via-api: uvicorn worker processes."),
    pipeline: bool = typer.Option(False, "--pipeline", help="Run the messaging pipeline (relay, email, analytics) "
                                  "and the inventory worker during the sale; drain, audit and measure it after."),
    pipeline_workers: int = typer.Option(1, min=1, max=4, help="--pipeline: workers running the relay and "
                                         "subscribers side by side (each part its own process)."),
    types: bool = typer.Option(False, "--types", help="Three ticket types (cheap/mid/premium, 60/30/10% of the "
                               "tickets); most buyers want 2 cheap. Reports sales per type."),
    seated: bool = typer.Option(False, "--seated", help="Like --types, each type a section of a seat map: reports "
                                "seats sold and the share of multi-seat orders seated together."),
    capacity: bool = typer.Option(True, "--capacity/--no-capacity", help="--pipeline: after the sale, measure the "
                                  "pipeline on a backlog of the sale's message mix with one worker and with two."),
    open_page: bool = typer.Option(False, "--open", help="Open the live sale dashboard of a running `boxoffice "
                                   "serve` in a browser (its URL is printed anyway); turns --worker on."),
) -> None:
    """Run a flash sale against the emulators and audit the database afterwards.

    Uses running emulators (FIRESTORE_EMULATOR_HOST or `boxoffice dev up`) when there are
    some, else starts its own and stops them after. Exit 0 when the audit is clean and no
    buyer got an error; 7 otherwise.
    """

    watch = announce_dashboard(open_page)
    if watch:
        err.print(watch)
    worker = worker or open_page
    try:
        config = SimulationConfig(
            buyers=buyers, tickets=tickets, concurrency=concurrency, max_quantity=max_quantity,
            shards=shards, strategy=Strategy(strategy), commit=CommitMode(commit),
            deadline_s=deadline, seed=seed, instances=instances, allocators=allocators, hold_share=hold_share,
            confirm_share=confirm_share, cancel_share=cancel_share, hold_ttl_s=hold_ttl, worker=worker,
            types=types, seated=seated,
        )
    except ValueError as exc:
        err.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(EXIT_INPUT) from exc
    except errors.InvalidRequest as exc:
        err.print(f"[red]error[/red]: {exc.message}")
        raise typer.Exit(EXIT_INPUT) from exc
    if via_api or compare_library:
        _simulate_via_api(config, project, compare_library, api_workers, json_path)
        return

    with _stack(project) as stack, _sale_pipeline(stack, pipeline, pipeline_workers, capacity) as sale_pipeline:
        db = em.firestore_client(stack)
        with Progress(TextColumn("[bold]flash sale"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("sold {task.fields[sold]} · sold out {task.fields[sold_out]} · errors {task.fields[errors]}"),
                      TimeElapsedColumn(), console=err, transient=False) as progress:
            task = progress.add_task("buyers", total=buyers, sold=0, sold_out=0, errors=0)
            tally = {"sold": 0, "sold_out": 0, "errors": 0}

            def on_answer(result) -> None:  # type: ignore[no-untyped-def]
                key = {"sold": "sold", "sold_out": "sold_out", "error": "errors"}.get(result.answer.value)
                if key:
                    tally[key] += 1
                progress.update(task, advance=1, sold=tally["sold"], sold_out=tally["sold_out"], errors=tally["errors"])

            try:
                result = run_simulation(db, config, on_answer=on_answer, pipeline=sale_pipeline)
            except errors.BoxofficeError as exc:
                err.print(f"[red]error[/red]: {exc.message}")
                raise typer.Exit(EXIT_INPUT) from exc
        report = result.report()
        print_report(report, out)
        if json_path:
            write_json(report, json_path)
            out.print(f"report written to {json_path}")
        if plot:
            write_plot(result, plot)
            out.print(f"plot written to {plot}")
    if not report["audit"]["ok"] or report["errors"]:
        raise typer.Exit(EXIT_AUDIT_FAILED)


def _simulate_via_api(config: SimulationConfig, project: str, compare_library: bool, api_workers: int,
                      json_path: Path | None) -> None:

    try:
        figures = simulate_via_api(config, project=project, compare_library=compare_library,
                                   api_workers=api_workers, json_path=json_path)
    except errors.BoxofficeError as exc:
        err.print(f"[red]error[/red]: {exc.message}")
        raise typer.Exit(EXIT_INPUT) from exc
    if not figures["ok"]:
        raise typer.Exit(EXIT_AUDIT_FAILED)


def bench(
    buyers: int = typer.Option(5000, min=1, help="Buyers in each contended phase."),
    tickets: int = typer.Option(1000, min=1, help="Tickets in each contended phase."),
    concurrency: int = typer.Option(200, min=1, max=1000, help="Buyers in flight at once, every phase."),
    deadline: float = typer.Option(10.0, min=0.1, help="Same deadline for every buyer of every phase."),
    instances: str = typer.Option("1,8,40", help="App instances (OS processes) of the queued phases, comma-separated."),
    direct: bool = typer.Option(True, "--direct/--no-direct", help="The direct-sharded baseline phase."),
    single_document: bool = typer.Option(False, "--single-document", help="The single-document baselines "
                                         "(several minutes each)."),
    ceiling_buyers: int | None = typer.Option(None, help="Buyers in the ceiling phases (default: --buyers)."),
    json_path: Path = typer.Option(Path("reports/bench.json"), "--json", help="Where to write the figures."),
    project: str = typer.Option("demo-boxoffice-bench", help="Emulator project id (emptied between phases)."),
) -> None:
    """Measure the queued sale at several instance counts against the uncontended
    one-purchase-per-commit ceiling (and baselines), side by side in one run on one emulator.
    Prints every figure, the batch size and commit rate behind it, and the ratios."""

    try:
        counts = tuple(int(n) for n in instances.split(",") if n.strip())
        if not counts or min(counts) < 1 or max(counts) > concurrency:
            raise ValueError
    except ValueError:
        err.print(f"[red]error[/red]: --instances must be whole numbers between 1 and the concurrency, got {instances!r}")
        raise typer.Exit(2) from None
    with _stack(project, pubsub=True) as stack:
        db = em.firestore_client(stack)
        figures = run_bench(
            db, lambda: em.clear_firestore(stack, project), buyers=buyers, tickets=tickets,
            concurrency=concurrency, deadline_s=deadline, ceiling_buyers=ceiling_buyers, instances=counts,
            direct=direct, single_document=single_document,
            progress=lambda phase: err.print(f"[dim]phase: {phase}[/dim]"),
        )
    write_json(figures, json_path)
    table = Table(*ROW_HEADERS, title=f"{buyers} buyers, {tickets} tickets, concurrency {concurrency} "
                  f"(machine: {os.cpu_count()} cores; shared machines give noisy absolute figures)")
    for row in rows(figures):
        table.add_row(*row)
    out.print(table)
    out.print_json(json.dumps({"ratios": figures["ratios"], "targets": figures["targets"], "checks": figures["checks"]}))
    out.print(f"figures written to {json_path}")
    if not figures["all_targets_met"]:
        raise typer.Exit(EXIT_AUDIT_FAILED)
