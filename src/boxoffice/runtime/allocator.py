"""The allocator process: `boxoffice worker --only allocator` (a part of `boxoffice worker`,
built by the composition root, runtime/root.py).

``AllocatorLoop`` finds the events whose requests need deciding (on sale or paused: a paused
sale's requests are answered "not on sale") and runs one ``EventAllocator`` thread per event.
Every allocator process competes for each event's lease; the holder decides, the others stand
by and take over within the lease's expiry (``DEFAULT_LEASE_TTL_S``) when it dies. Run two for
failover; in production it is a Cloud Run service with min-instances 2 (see docs/design.md).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.log import kv
from boxoffice.services.allocator import DEFAULT_BATCH, DEFAULT_LEASE_TTL_S, EventAllocator
from boxoffice.store.admission_queue import admission_queue
from boxoffice.store.documents import EVENTS
from boxoffice.store.requests import new_instance_id

log = logging.getLogger(__name__)

DISCOVER_EVERY_S = 0.5
STANDBY_POLL_S = 0.5


ALLOCATOR = "allocator"


class AllocatorLoop:
    name = ALLOCATOR

    def __init__(
        self,
        db: firestore.Client,
        *,
        holder: str | None = None,
        batch_size: int = DEFAULT_BATCH,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        summary: bool = True,
        encoded_writes: bool = True,
    ) -> None:
        self.db = db
        self.summary = summary
        self.encoded_writes = encoded_writes
        self.holder = holder or f"allocator-{new_instance_id()}"
        self.batch_size = batch_size
        self.lease_ttl_s = lease_ttl_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._events: dict[str, tuple[EventAllocator, threading.Thread, threading.Event]] = {}
        self.errors = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._discover, name="allocator-discovery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for event_id in list(self._events):
            self._retire(event_id, timeout)

    def status(self) -> dict[str, Any]:
        return {
            "alive": bool(self._thread and self._thread.is_alive()),
            "holder": self.holder,
            "errors": self.errors,
            "events": {
                e: {"lease": a.lease is not None, "batches": a.stats.batches, "answered": a.stats.answered,
                    "granted": a.stats.granted, "skipped": a.stats.skipped}
                for e, (a, _, _) in self._events.items()
            },
        }

    def _discover(self) -> None:
        while not self._stop.is_set():
            try:
                live = self._selling_events()
                for event_id in live - set(self._events):
                    self._launch(event_id)
                for event_id in set(self._events) - live:
                    self._retire(event_id)
            except Exception as exc:  # noqa: BLE001 - discovery must survive a bad moment
                self.errors += 1
                kv(log, logging.WARNING, "allocator.discovery_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            self._stop.wait(DISCOVER_EVERY_S)

    def _selling_events(self) -> set[str]:
        query = self.db.collection(EVENTS).where(filter=FieldFilter("status", "in", ["on_sale", "paused"]))
        return {snap.id for snap in query.select([]).stream()}

    def _launch(self, event_id: str) -> None:
        allocator = EventAllocator(self.db, admission_queue(self.db.project), event_id, self.holder,
                                   batch_size=self.batch_size, lease_ttl_s=self.lease_ttl_s,
                                   write_summary=self.summary, encoded_writes=self.encoded_writes)
        stop = threading.Event()
        thread = threading.Thread(target=self._run_event, args=(allocator, stop), name=f"allocator-{event_id}",
                                  daemon=True)
        self._events[event_id] = (allocator, thread, stop)
        thread.start()

    def _retire(self, event_id: str, timeout: float = 5.0) -> None:
        allocator, thread, stop = self._events.pop(event_id)
        stop.set()
        thread.join(timeout)
        try:
            allocator.stop()
        except Exception as exc:  # noqa: BLE001 - the lease expires by itself anyway
            kv(log, logging.DEBUG, "allocator.release_failed", event_id=event_id, error=str(exc)[:200])

    def _run_event(self, allocator: EventAllocator, stop: threading.Event) -> None:
        while not stop.is_set() and not self._stop.is_set():
            try:
                allocator.step()
                if allocator.lease is None:
                    stop.wait(STANDBY_POLL_S)  # another allocator holds the lease: stand by
            except Exception as exc:  # noqa: BLE001 - keep deciding; the batch is redelivered
                self.errors += 1
                kv(log, logging.ERROR, "allocator.step_failed", event_id=allocator.event_id,
                   error=f"{type(exc).__name__}: {exc}"[:500])
                time.sleep(0.5)


def allocator_from_settings(db: firestore.Client) -> AllocatorLoop:
    """The loop with its settings from the environment (a Cloud Run service's configuration):
    BOXOFFICE_ALLOCATOR_BATCH (requests per commit), BOXOFFICE_ALLOCATOR_LEASE_TTL_S, and
    BOXOFFICE_ALLOCATOR_SUMMARY=off when something else keeps the event summary (tests of the
    inventory trigger alone), BOXOFFICE_ALLOCATOR_STAGING=library to stage batches with the
    client library's own encoding (the comparison in docs/decisions.md)."""
    import os

    return AllocatorLoop(
        db,
        batch_size=int(os.environ.get("BOXOFFICE_ALLOCATOR_BATCH", DEFAULT_BATCH)),
        lease_ttl_s=float(os.environ.get("BOXOFFICE_ALLOCATOR_LEASE_TTL_S", DEFAULT_LEASE_TTL_S)),
        summary=os.environ.get("BOXOFFICE_ALLOCATOR_SUMMARY", "on") != "off",
        encoded_writes=os.environ.get("BOXOFFICE_ALLOCATOR_STAGING", "encoded") != "library",
    )



class AllocatorProcesses:
    """Allocator processes on a stack, for the simulator, the bench, the demo and the tests: the
    worker's ``allocator`` part (`python -m boxoffice.runtime.part_process allocator`, what
    `boxoffice worker --only allocator` supervises) as real OS processes, stopped by their own
    process ids (they also stop by themselves when this process goes away)."""

    def __init__(self, firestore_host: str, pubsub_host: str, project: str, *, count: int = 1,
                 log_dir: str | None = None, settings: dict[str, str] | None = None) -> None:
        import os
        import tempfile

        self.env = dict(os.environ, FIRESTORE_EMULATOR_HOST=firestore_host, PUBSUB_EMULATOR_HOST=pubsub_host,
                        GOOGLE_CLOUD_PROJECT=project, GCLOUD_PROJECT=project, PYTHONUNBUFFERED="1",
                        BOXOFFICE_LOG_LEVEL="INFO",
                        **(settings or {}))
        self.count = count
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="boxoffice-allocator-")
        self.procs: list[Any] = []

    @classmethod
    def from_environment(cls, *, count: int = 1) -> AllocatorProcesses:
        """On the emulators the environment names (what ``running_stack`` sets)."""
        import os

        return cls(os.environ["FIRESTORE_EMULATOR_HOST"], os.environ["PUBSUB_EMULATOR_HOST"],
                   os.environ.get("GOOGLE_CLOUD_PROJECT", "demo-boxoffice"), count=count)

    def start(self, ready_timeout_s: float = 60.0) -> AllocatorProcesses:
        """Start ``count`` processes and wait until each runs its allocator loop."""
        for _ in range(self.count):
            self.spawn()
        for i in range(len(self.procs)):
            self.wait_ready(i, ready_timeout_s)
        return self

    def log_path(self, index: int) -> Any:
        from pathlib import Path

        return Path(self.log_dir) / f"allocator-{index}.log"

    def wait_ready(self, index: int, timeout_s: float = 60.0) -> None:
        from pathlib import Path

        give_up = time.monotonic() + timeout_s
        path = self.log_path(index)
        while time.monotonic() < give_up:
            text = path.read_text(errors="replace") if path.exists() else ""
            # the part's first heartbeat: it runs (its status file, see part_status.py)
            if (Path(self.log_dir) / f"allocator-{index}" / "allocator.json").exists() or "part.started" in text:
                return
            if self.procs[index].poll() is not None:
                raise RuntimeError(f"allocator process exited with {self.procs[index].returncode}: {text[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"allocator process not ready after {timeout_s}s; log: {path}")

    def spawn(self) -> Any:
        import subprocess
        import sys
        from pathlib import Path

        log_path = self.log_path(len(self.procs))
        # The worker's part process, without a supervisor: a test that SIGKILLs it sees it stay dead.
        cmd = [sys.executable, "-m", "boxoffice.runtime.part_process", "allocator", "--dir",
               str(Path(self.log_dir) / f"allocator-{len(self.procs)}")]
        proc = subprocess.Popen(cmd, env=self.env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115 - the child keeps it
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def ensure_running(self) -> None:
        """Start a new process for each that died (a test killed it): keeps ``count`` alive."""
        alive = [p for p in self.procs if p.poll() is None]
        for _ in range(self.count - len(alive)):
            self.spawn()
            self.wait_ready(len(self.procs) - 1)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def stop(self, timeout: float = 10.0) -> None:
        import signal
        import subprocess

        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def __enter__(self) -> AllocatorProcesses:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
