"""What every `boxoffice` command shares: output (human or ``--json``), exit codes, and the one
mapping from a ``BoxofficeError`` to an exit code.

Exit codes:

    0  done
    1  unexpected failure (a bug: please report it)
    2  bad input (usage, invalid quantity, bad event data)
    3  not found (unknown event or order)
    4  refused by a rule: sold out, not enough tickets, per-user limit, not on sale,
       idempotency key reused with other parameters
    5  could not finish in time because of load (retry with the same idempotency key)
    6  the local emulators are missing or would not start
    7  (simulate, bench) the run finished but its audit or targets failed
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console

from boxoffice.domain import errors
from boxoffice.runtime import root

out = Console()
err = Console(stderr=True)
JsonOpt = typer.Option(False, "--json", help="Machine-readable output on stdout.")

EXIT_BUG = 1
EXIT_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
EXIT_BUSY = 5
EXIT_NO_EMULATOR = 6
EXIT_AUDIT_FAILED = 7


def exit_code_for(exc: errors.BoxofficeError) -> int:
    if isinstance(exc, errors.InvalidRequest):
        return EXIT_INPUT
    if isinstance(exc, errors.NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, errors.ContentionTimeout):
        return EXIT_BUSY
    return EXIT_REFUSED


def fail(exc: errors.BoxofficeError, as_json: bool) -> NoReturn:
    """Report a refused or invalid request (as JSON on stdout with --json) and exit with its code."""
    if as_json:
        print(json.dumps({"ok": False, "error": exc.code, "message": exc.message}))
    else:
        err.print(f"[red]error[/red] ({exc.code}): {exc.message}")
    raise typer.Exit(exit_code_for(exc))


@contextmanager
def exit_on_error(as_json: bool) -> Iterator[None]:
    """``with exit_on_error(as_json): ...``: a BoxofficeError raised inside ends the command
    through ``fail`` (its message, its exit code)."""
    try:
        yield
    except errors.BoxofficeError as exc:
        fail(exc, as_json)


def emit(as_json: bool, payload: Any, human: Any) -> None:
    """Print ``payload`` as one JSON document with --json, else ``human`` (text or a rich table).

    An API resource in ``payload`` is its response model (``api/schemas.py``, e.g.
    ``OrderOut.of(order)``), written as the API writes it, so a script gets the same fields from
    the CLI and the API.
    """
    if as_json:
        print(json.dumps(payload, default=_as_json))
    else:
        out.print(human)


def _as_json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def money(amount: int, currency: str) -> str:
    return f"{amount / 100:.2f} {currency}"


def client() -> Any:
    """The Firestore client of the environment (runtime/root.py); exit 6 when there is none."""
    try:
        return root.firestore_client(require_target=True)
    except root.NoFirestore as exc:
        err.print(str(exc))
        raise typer.Exit(EXIT_NO_EMULATOR) from exc
