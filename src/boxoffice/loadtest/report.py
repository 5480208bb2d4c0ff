"""How a simulation is shown: a table for people, JSON for scripts, a PNG for the eyes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from boxoffice.loadtest.sale_pipeline import pipeline_rows
from boxoffice.loadtest.simulator import Answer, SimulationResult


def summary_table(report: dict[str, Any]) -> Table:
    lat = report["latency_ms"]
    table = Table(title=f"Flash sale {report['event_id']} ({report['strategy']}, {report['commit']})",
                  show_header=False, title_justify="left")
    table.add_row("buyers / tickets", f"{report['buyers']} buyers for {report['capacity']} tickets "
                  f"on {report['shards']} shard(s), concurrency {report['concurrency']}")
    table.add_row("app instances", f"{report['instances']} OS process(es)"
                  + (f", {report['allocators']} allocator process(es)" if report.get("allocators") else ""))
    table.add_row("sold", f"{report['tickets_sold']} tickets in {report['orders_confirmed']} orders "
                  f"({report['success_rate']:.1%} of buyers)")
    table.add_row("sold out", str(report["sold_out"]))
    table.add_row("refused (other rules)", str(report["refused"]))
    errors = f"{report['errors']}" + (f" {report['errors_by_kind']}" if report["errors_by_kind"] else "")
    table.add_row("errors", f"[red]{errors}[/red]" if report["errors"] else errors)
    table.add_row("oversold", f"[red]{report['oversold']}[/red]" if report["oversold"] else "0")
    table.add_row("duration", f"{report['duration_s']:.2f} s, {report['throughput_per_s']:.0f} answers/s")
    if report["sellout_s"]:
        table.add_row("sales", f"{report['sales_per_s']:.0f} orders/s until the last sale at {report['sellout_s']:.2f} s, "
                      f"{report['attempts_per_sale']} attempts per sale")
    queue = report.get("queue")
    if queue:
        fifo = queue["fifo_violations"]
        table.add_row("first come, first served", "not judged (tickets came back during the sale)" if fifo is None
                      else (f"[red]{fifo} FIFO violations[/red]" if fifo else "0 FIFO violations (server arrival order)"))
        table.add_row("allocator commits", f"{queue['allocator_commits']} commits ({queue['commits_per_s']}/s): "
                      f"{queue['sales_per_commit']} sales and {queue['answers_per_commit']} answers per commit, "
                      f"largest {queue['largest_commit']}")
    table.add_row("latency (all)", f"p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms")
    if report.get("holds") or report.get("orders_cancelled"):
        table.add_row("holds / cancellations", f"{report['holds']} holds ({report['holds_confirmed']} confirmed, "
                      f"{report['holds_expired']} expired), {report['orders_cancelled']} orders cancelled")
    trigger = report.get("inventory_trigger")
    if trigger:
        table.add_row("summary (trigger)", f"lag p50 {trigger['lag_p50_s'] or 0:.2f} s, p99 {trigger['lag_p99_s'] or 0:.2f} s; "
                      f"{trigger['summary_writes']} event-document writes, at most {trigger['summary_writes_max_in_1s']} "
                      f"in any second, mean {trigger['summary_writes_per_s_mean'] or 0:.2f}/s")
        if trigger.get("seen_p99_s") is not None:
            table.add_row("summary lag, split", f"commit -> seen p50 {trigger['seen_p50_s']:.2f} s, p99 "
                          f"{trigger['seen_p99_s']:.2f} s; seen -> summary p50 {trigger['reflected_p50_s']:.2f} s, "
                          f"p99 {trigger['reflected_p99_s']:.2f} s; {trigger['slow_changes']} changes over 2 s")
    if report.get("pipeline"):

        for name, value in pipeline_rows(report["pipeline"]):
            table.add_row(name, value)
    typed = report.get("ticket_types")
    if typed:
        for type_id, row in typed["by_type"].items():
            table.add_row(f"type {type_id}", f"{row['tickets_sold']} tickets in {row['orders']} orders, "
                          f"{row['sold_out']} of {row['buyers']} buyers sold out")
        if typed["seats_sold"]:
            rate = typed["adjacency_rate"]
            table.add_row("seats", f"{typed['seats_sold']} sold; {typed['seated_together']} of "
                          f"{typed['multi_seat_orders']} multi-seat orders seated together"
                          + (f" ({rate:.1%})" if rate is not None else ""))
    audit = report["audit"]
    table.add_row("audit", "[green]ok[/green]" if audit["ok"] else "[red]FAILED[/red]: " + "; ".join(audit["problems"]))
    return table


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(summary_table(report))


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def write_plot(result: SimulationResult, path: Path) -> None:
    """Latency distribution by answer, and tickets sold over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for answer, colour in ((Answer.SOLD, "tab:green"), (Answer.SOLD_OUT, "tab:orange"), (Answer.ERROR, "tab:red")):
        values = [r.latency_s * 1000 for r in result.results if r.answer is answer]
        if values:
            left.hist(values, bins=50, alpha=0.6, color=colour, label=f"{answer.value} ({len(values)})")
    left.set_xlabel("latency (ms)")
    left.set_ylabel("buyers")
    left.set_title("Answer latency")
    left.legend()

    sales = sorted((r.started_s + r.latency_s, r.quantity) for r in result.results if r.answer is Answer.SOLD)
    times, total, cumulative = [0.0], 0, [0]
    for at, quantity in sales:
        total += quantity
        times.append(at)
        cumulative.append(total)
    right.step(times, cumulative, where="post", color="tab:green", label="tickets sold")
    right.axhline(result.capacity, color="grey", linestyle="--", label=f"capacity {result.capacity}")
    right.set_xlabel("seconds since the sale opened")
    right.set_ylabel("tickets")
    right.set_title("Sales over time")
    right.legend(loc="lower right")
    fig.suptitle(f"{len(result.results)} buyers, {result.capacity} tickets, {result.shard_count} shard(s), "
                 f"{result.config.strategy.value}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
