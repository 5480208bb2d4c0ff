"""`boxoffice worker`: the local background loops in the foreground."""

from __future__ import annotations

import json

import typer

from boxoffice.cli.output import JsonOpt, client, emit, err, fail
from boxoffice.domain import errors
from boxoffice.log import configure
from boxoffice.runtime.worker import build_worker, registered_loops


def worker(
    only: list[str] = typer.Option(None, "--only", help="Run only these loops (repeatable)."),
    duration: float | None = typer.Option(None, "--for", help="Stop after this many seconds."),
    as_json: bool = JsonOpt,
) -> None:
    """Run the local background loops (inventory trigger, hold sweeper, ...) until Ctrl-C."""
    configure("INFO")
    try:
        w = build_worker(client(), only or None)
    except ValueError as exc:
        fail(errors.InvalidRequest(f"{exc}; registered: {registered_loops()}"), as_json)
    if not as_json:
        err.print(f"worker running: {', '.join(loop.name for loop in w.loops)} (Ctrl-C stops)")
    w.run(duration_s=duration)
    emit(as_json, {"ok": True, "loops": w.status()}, json.dumps(w.status(), indent=2, default=str))
