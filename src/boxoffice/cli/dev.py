"""`boxoffice dev up|status|down`: a background emulator stack shared by shells, tests and servers."""

from __future__ import annotations

import json
import time
from typing import Any

import typer
from rich.table import Table

from boxoffice.cli.output import JsonOpt, err, out
from boxoffice.runtime import auth_emulator, devstack
from boxoffice.runtime import emulators as em

dev_app = typer.Typer(help="Local dev stack: the Firestore and Pub/Sub emulators.", no_args_is_help=True)


def _exports(stack: em.Stack) -> str:
    parts = [f"FIRESTORE_EMULATOR_HOST={stack.firestore_host}"]
    if stack.pubsub_host:
        parts.append(f"PUBSUB_EMULATOR_HOST={stack.pubsub_host}")
    parts.append(f"GOOGLE_CLOUD_PROJECT={stack.project}")
    auth = auth_emulator.recorded_auth_emulator(stack.state_dir)
    if auth is not None:
        parts.append(f"FIREBASE_AUTH_EMULATOR_HOST={auth.host}")
    return "export " + " ".join(parts)


def _info(stack: em.Stack, running: bool, **extra: object) -> dict[str, Any]:
    record = em.read_state(stack.state_dir) or {}
    return {
        "running": running,
        "project": stack.project,
        "firestore_host": stack.firestore_host,
        "pubsub_host": stack.pubsub_host,
        "pids": list(stack.pids),
        "smtp_host": record.get("smtp_host"),
        "started_at": record.get("started_at"),
        "state_file": str(em.state_file(stack.state_dir)),
        "export": _exports(stack),
        **extra,
    }


def _show(stack: em.Stack, title: str) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_row("project", stack.project)
    table.add_row("firestore", stack.firestore_host)
    table.add_row("pubsub", stack.pubsub_host or "-")
    table.add_row("pids", " ".join(map(str, stack.pids)))
    table.add_row("state", str(em.state_file(stack.state_dir)))
    out.print(table)
    # plain print so the line can be copied / eval'd as is
    print(_exports(stack))


@dev_app.command()
def up(
    project: str = typer.Option("demo-boxoffice", help="Project id the emulators serve."),
    no_pubsub: bool = typer.Option(False, "--no-pubsub", help="Start only the Firestore emulator."),
    json_out: bool = JsonOpt,
) -> None:
    """Start the emulators in the background and record them (no-op when already up)."""
    existing = em.recorded_stack()
    if existing is not None:
        _auth_up(existing.project)
        if json_out:
            print(json.dumps(_info(existing, True, already_running=True)))
        else:
            _show(existing, "[yellow]dev stack already up[/]")
        raise typer.Exit(0)
    stale = em.read_state()
    if stale:  # recorded but (partly) dead: stop what is left of it, forget it
        em.stop_stack(em.Stack(project=str(stale.get("project", "")), firestore_host="", pubsub_host=None,
                               pids=tuple(int(p) for p in stale.get("pids", [])), state_dir=em.default_state_dir()))
        devstack.stop_smtp(stale)
        em.remove_state()
    t0 = time.monotonic()
    try:
        if not json_out:
            with out.status("starting emulators..."):
                stack = em.start_stack(project, pubsub=not no_pubsub, state_dir=em.default_state_dir())
        else:
            stack = em.start_stack(project, pubsub=not no_pubsub, state_dir=em.default_state_dir())
    except (em.EmulatorNotFound, em.EmulatorStartError) as e:
        if json_out:
            print(json.dumps({"running": False, "error": str(e)}))
        else:
            err.print(f"[red]error:[/] {e}", markup=True, highlight=False)
        raise typer.Exit(2) from e
    em.write_state(stack)
    devstack.ensure_dev_topology(stack)
    devstack.start_smtp(stack.state_dir)
    _auth_up(project)
    secs = round(time.monotonic() - t0, 1)
    if json_out:
        print(json.dumps(_info(stack, True, already_running=False, startup_seconds=secs)))
    else:
        _show(stack, f"[green]dev stack up[/] in {secs} s")


def _auth_up(project: str) -> str | None:
    """The Auth emulator beside the others; the stack stays usable without it (no API sign-in)."""
    try:
        return auth_emulator.dev_up(project).host
    except (em.EmulatorNotFound, em.EmulatorStartError) as e:
        err.print(f"[yellow]Auth emulator not started:[/] {e}", highlight=False)
        return None


@dev_app.command()
def status(json_out: bool = JsonOpt) -> None:
    """Show the recorded stack. Exit code 0 when up, 1 when down."""
    stack = em.recorded_stack()
    if stack is None:
        stale = em.read_state()
        if json_out:
            print(json.dumps({"running": False, "stale_state": bool(stale),
                              "state_file": str(em.state_file())}))
        else:
            msg = "dev stack is [red]down[/]"
            if stale:
                msg += f" (stale record in {em.state_file()}; `boxoffice dev down` clears it)"
            out.print(msg)
        raise typer.Exit(1)
    if json_out:
        print(json.dumps(_info(stack, True)))
    else:
        _show(stack, "dev stack is [green]up[/]")


@dev_app.command()
def down(json_out: bool = JsonOpt) -> None:
    """Stop the recorded emulator processes and remove the record."""
    data = em.read_state()
    if not data:
        if json_out:
            print(json.dumps({"stopped": [], "was_running": False}))
        else:
            out.print("dev stack was not up")
        raise typer.Exit(0)
    pids = tuple(int(p) for p in data.get("pids", []))
    alive = [p for p in pids if em.pid_alive(p)]
    em.stop_stack(em.Stack(project=str(data.get("project", "")), firestore_host=str(data.get("firestore_host", "")),
                           pubsub_host=data.get("pubsub_host"), pids=pids, state_dir=em.default_state_dir()))
    devstack.stop_smtp(data)
    em.remove_state()
    auth_emulator.dev_down()
    left = [p for p in pids if em.pid_alive(p)]
    if json_out:
        print(json.dumps({"stopped": [p for p in alive if p not in left], "still_alive": left,
                          "was_running": bool(alive)}))
    else:
        out.print(f"dev stack down (stopped pids {' '.join(map(str, alive)) or 'none'})")
        if left:
            out.print(f"[yellow]still alive (not ours?):[/] {' '.join(map(str, left))}")


if __name__ == "__main__":  # pragma: no cover
    dev_app()
