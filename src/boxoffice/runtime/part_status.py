"""Where the worker's parts record how they are doing, readable from any process.

One JSON file per part and one for the supervisor, under
``<state dir>/workers/<worker id>/`` (the state dir of `boxoffice dev up`, ``BOXOFFICE_STATE_DIR``):

    supervisor.json    the supervisor: pid, per part its pid, restarts, last exit, state
    <part>.json        the part's own heartbeat: pid, heartbeat_at, last_progress_at,
                       last_error (+ at), and the part's status() (counters, lag, backlog)

Files, not a Firestore document, on purpose: a part must be able to say "Firestore is down"
while Firestore is down. Each file is written whole to a temporary name and renamed, so a
reader never sees half a file; each has one writer (the part, or the supervisor).
Several workers side by side each have their own directory (the worker id).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boxoffice.runtime.emulators import pid_alive as alive

SUPERVISOR = "supervisor"
WORKERS_DIR = "workers"
# A part that has not written its heartbeat for this long is reported as stale.
STALE_AFTER_S = 10.0


def workers_dir(state_dir: Path) -> Path:
    return state_dir / WORKERS_DIR


def write_status(directory: Path, name: str, data: dict[str, Any]) -> None:
    """Replace ``<directory>/<name>.json`` atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, default=str, indent=1))
    tmp.replace(path)


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pid_alive(pid: int | None) -> bool:

    return bool(pid) and alive(int(pid))  # type: ignore[arg-type]


@dataclass(frozen=True)
class PartView:
    """One part of one worker, as its files say."""

    worker_id: str
    name: str
    pid: int | None
    alive: bool
    state: str  # running | backoff | stale | stopped
    restarts: int
    last_exit: str | None
    last_error: str | None
    last_error_at: float | None
    last_progress_at: float | None
    heartbeat_at: float | None
    status: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class WorkerView:
    worker_id: str
    pid: int | None
    alive: bool
    parts: list[PartView]

    def as_dict(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "pid": self.pid, "alive": self.alive,
                "parts": [p.as_dict() for p in self.parts]}


def read_worker(directory: Path, now: float | None = None) -> WorkerView:
    now = time.time() if now is None else now
    sup = read_status(directory / f"{SUPERVISOR}.json") or {}
    sup_pid = sup.get("pid")
    sup_alive = pid_alive(sup_pid)
    names = list((sup.get("parts") or {}).keys())
    names += sorted(p.stem for p in directory.glob("*.json") if p.stem != SUPERVISOR and p.stem not in names)
    parts = []
    for name in names:
        own = read_status(directory / f"{name}.json") or {}
        managed = (sup.get("parts") or {}).get(name) or {}
        pid = own.get("pid") or managed.get("pid")
        alive = pid_alive(pid) and (pid == managed.get("pid") or not managed)
        beat = own.get("heartbeat_at")
        if not sup_alive and not alive:
            state = "stopped"
        elif managed.get("state") == "backoff":
            state = "backoff"
        elif alive and beat is not None and now - float(beat) > STALE_AFTER_S:
            state = "stale"
        elif alive:
            state = "running"
        else:
            state = str(managed.get("state") or "stopped")
        # The part's own last error says why (a dead part's file keeps it); the exit, how it ended.
        if own.get("last_error"):
            last_at, last_error = own.get("last_error_at"), own.get("last_error")
        else:
            last_at, last_error = managed.get("last_exit_at"), managed.get("last_exit")
        parts.append(PartView(
            worker_id=directory.name, name=name, pid=pid, alive=alive, state=state,
            restarts=int(managed.get("restarts", 0)), last_exit=managed.get("last_exit"),
            last_error=last_error, last_error_at=last_at, last_progress_at=own.get("last_progress_at"),
            heartbeat_at=beat, status=own.get("status") or {}))
    return WorkerView(directory.name, sup_pid, sup_alive, parts)


def read_workers(state_dir: Path, *, include_stopped: bool = False) -> list[WorkerView]:
    """Every worker that recorded itself under ``state_dir`` (running ones unless asked)."""
    root = workers_dir(state_dir)
    if not root.is_dir():
        return []
    views = [read_worker(d) for d in sorted(root.iterdir()) if d.is_dir()]
    return [v for v in views if include_stopped or v.alive or any(p.alive for p in v.parts)]
