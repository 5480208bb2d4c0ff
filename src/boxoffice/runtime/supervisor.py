"""The supervisor of `boxoffice worker`: each part an OS process, restarted when it dies.

``Supervisor(parts, state_dir=...)`` starts ``python -m boxoffice.runtime.part_process NAME``
for every part, then watches them. A part that exits without being asked to (a crash, a
SIGKILL, a fault it could not heal, an OOM kill) is started again after a backoff that doubles
with each failure in a row (``RESTART_BACKOFF``: 0.5 s, 1 s, 2 s ... 30 s) and resets once the
part stayed up ``STABLE_AFTER_S``. A part that exits with ``EXIT_SKIPPED`` (it cannot run here)
is left stopped. Its record (``<state dir>/workers/<worker id>/supervisor.json``) holds, per
part, the pid, restarts, last exit and state; `boxoffice worker status` reads it with the
parts' own heartbeat files (part_status.py).

Several supervisors may run side by side (two `boxoffice worker`s): each has its own worker id
and directory, and their parts share the work through Firestore and Pub/Sub (subscribers pull
from the same subscriptions; every handler is idempotent by message id).

Each part's output goes to ``<dir>/<part>.log``. When the supervisor stops (SIGTERM, SIGINT,
``stop()``), it sends SIGTERM to the parts, waits ``STOP_GRACE_S``, then SIGKILLs what is
left; a part whose supervisor died stops by itself (it checks its parent every heartbeat).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boxoffice.log import kv
from boxoffice.retry import Backoff
from boxoffice.runtime.part_process import EXIT_SKIPPED
from boxoffice.runtime.part_status import (
    SUPERVISOR,
    WorkerView,
    read_worker,
    workers_dir,
    write_status,
)

log = logging.getLogger(__name__)

RESTART_BACKOFF = Backoff(base_s=0.5, cap_s=30.0, multiplier=2.0)
STABLE_AFTER_S = 30.0
STOP_GRACE_S = 10.0
POLL_S = 0.2


def exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class _Part:
    name: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures_in_a_row: int = 0
    state: str = "starting"  # running | backoff | skipped | stopped
    next_start_at: float = 0.0
    last_exit: str | None = None
    last_exit_at: float | None = None
    pids: list[int] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"pid": self.proc.pid if self.proc else None, "state": self.state, "restarts": self.restarts,
                "started_at": self.started_at, "last_exit": self.last_exit, "last_exit_at": self.last_exit_at,
                "next_start_at": self.next_start_at if self.state == "backoff" else None}


class Supervisor:
    def __init__(self, parts: Sequence[str], *, state_dir: Path, worker_id: str | None = None,
                 env: Mapping[str, str] | None = None, backoff: Backoff = RESTART_BACKOFF,
                 stable_after_s: float = STABLE_AFTER_S) -> None:
        if not parts:
            raise ValueError("a worker needs at least one part")
        self.worker_id = worker_id or f"w{os.getpid()}"
        self.directory = workers_dir(Path(state_dir).resolve()) / self.worker_id
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("BOXOFFICE_STATE_DIR", str(Path(state_dir).resolve()))
        self.backoff = backoff
        self.stable_after_s = stable_after_s
        self.parts = {name: _Part(name) for name in parts}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- processes -----------------------------------------------------------------------

    def _spawn(self, part: _Part) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "boxoffice.runtime.part_process", part.name, "--dir", str(self.directory)]
        with open(self.directory / f"{part.name}.log", "ab") as out:
            # A session of its own: a Ctrl-C in the terminal reaches the supervisor only, which
            # then stops the parts in order (and does not mistake their exit for a crash).
            part.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env, close_fds=True, start_new_session=True)
        part.started_at = time.time()
        part.state = "running"
        part.pids.append(part.proc.pid)
        kv(log, logging.INFO, "worker.part_started", worker=self.worker_id, part=part.name, pid=part.proc.pid,
           restarts=part.restarts)

    def _check(self, part: _Part, now: float) -> None:
        if part.state == "backoff" and now >= part.next_start_at:
            part.restarts += 1
            self._spawn(part)
            return
        if part.proc is None or part.state != "running":
            return
        code = part.proc.poll()
        if code is None:
            if part.failures_in_a_row and now - part.started_at > self.stable_after_s:
                part.failures_in_a_row = 0
            return
        part.last_exit, part.last_exit_at = exit_reason(code), now
        if self._stopping.is_set():
            part.state = "stopped"
        elif code == EXIT_SKIPPED:
            part.state = "skipped"
            kv(log, logging.WARNING, "worker.part_skipped", worker=self.worker_id, part=part.name)
        else:
            part.failures_in_a_row += 1
            delay = self.backoff.bound(part.failures_in_a_row)
            part.state, part.next_start_at = "backoff", now + delay
            kv(log, logging.WARNING, "worker.part_exited", worker=self.worker_id, part=part.name,
               reason=part.last_exit, restart_in_s=round(delay, 2))

    def _write(self) -> None:
        write_status(self.directory, SUPERVISOR, {
            "worker_id": self.worker_id, "pid": os.getpid(), "written_at": time.time(),
            "stopping": self._stopping.is_set(), "parts": {p.name: p.record() for p in self.parts.values()}})

    def poll(self) -> None:
        """Restart what died (after its backoff) and record the parts' state."""
        with self._lock:
            now = time.time()
            for part in self.parts.values():
                self._check(part, now)
            self._write()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> Supervisor:
        """Start every part and a thread that watches them; returns at once."""
        with self._lock:
            for part in self.parts.values():
                self._spawn(part)
            self._write()
        self._thread = threading.Thread(target=self._watch, name=f"supervisor-{self.worker_id}", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stopping.wait(POLL_S):
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - the supervisor must outlive a bad poll
                kv(log, logging.ERROR, "worker.poll_failed", worker=self.worker_id, error=repr(exc))

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM every part, SIGKILL what is still there after ``grace_s``."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            running = [p.proc for p in self.parts.values() if p.proc is not None and p.proc.poll() is None]
            for proc in running:
                proc.terminate()
            deadline = time.monotonic() + grace_s
            for proc in running:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            for part in self.parts.values():
                if part.proc is not None and part.state in ("running", "backoff"):
                    code = part.proc.returncode
                    part.last_exit = exit_reason(code) if code is not None else part.last_exit
                    part.state = "stopped"
            self._write()

    def run(self, *, duration_s: float | None = None) -> None:
        """Run until SIGINT/SIGTERM (or ``duration_s``), then stop every part."""
        done = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        self.start()
        try:
            done.wait(duration_s)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- reading -------------------------------------------------------------------------

    def view(self) -> WorkerView:
        return read_worker(self.directory)

    def part_pid(self, name: str) -> int | None:
        with self._lock:
            proc = self.parts[name].proc
            return proc.pid if proc is not None and proc.poll() is None else None

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until every part is up and has written a heartbeat (or was skipped)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                states = {p.name: p.state for p in self.parts.values()}
            beats = {p.name: p.heartbeat_at is not None and p.alive for p in self.view().parts}
            if all(state == "skipped" or beats.get(name) for name, state in states.items()):
                return True
            time.sleep(POLL_S)
        return False

    def fresh_part_status(self, name: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The part's status from a heartbeat written after this call (its figures up to now)."""
        asked = time.time()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            part = next((p for p in self.view().parts if p.name == name), None)
            if part is not None and (part.heartbeat_at or 0) > asked:
                return part.status
            time.sleep(POLL_S)
        return self.part_status(name)

    def part_status(self, name: str) -> dict[str, Any]:
        """The part's own latest status (its heartbeat file), {} before the first heartbeat."""
        for part in self.view().parts:
            if part.name == name:
                return part.status
        return {}
