"""One part of `boxoffice worker` in an OS process of its own.

    python -m boxoffice.runtime.part_process NAME --dir <state dir>/workers/<worker id>

The supervisor (runtime/supervisor.py) starts one such process per part; production runs each
part as a Cloud Function or a service of its own, so a part shares no memory with the others
and a crash (or a SIGKILL) takes down that part alone.

The process builds its part, starts it, and every ``HEARTBEAT_S`` writes ``<dir>/NAME.json``
(see part_status.py): its pid, the part's ``status()``, when its counters last moved
(``last_progress_at``) and the last warning or error it logged (``last_error``). It exits:
- 0 after SIGTERM/SIGINT (the part stopped cleanly), or when its supervisor is gone;
- ``EXIT_SKIPPED`` when the part cannot run here (no Pub/Sub emulator, no SMTP server): the
  supervisor does not restart it and shows why;
- 1 when the part cannot be built (say Pub/Sub is down while it creates its topology) or its
  thread died: the supervisor restarts it with backoff, which is how a part heals from a fault
  it does not handle itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from boxoffice.log import configure, kv
from boxoffice.runtime.part_status import write_status
from boxoffice.runtime.root import build_part, firestore_client

log = logging.getLogger("boxoffice.runtime.part_process")  # not __name__: run as __main__

HEARTBEAT_S = 1.0
EXIT_SKIPPED = 3
# Counters whose growth is not progress (trouble, or work waiting).
_NOT_PROGRESS = ("error", "fail", "pending", "deferred", "dead", "restart", "recreated", "lag", "backlog",
                 "outage", "unavailable")


def progress_count(status: dict[str, Any]) -> int:
    """The sum of a part's work counters (published, sent, ticks...): it grows with progress."""
    return sum(v for k, v in status.items()
               if isinstance(v, int) and not isinstance(v, bool) and not any(w in k for w in _NOT_PROGRESS))


class LastError(logging.Handler):
    """Keeps the last WARNING-or-worse line the part logged, for its status file."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.message: str | None = None
        self.at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()[:500]
        self.at = record.created


class PartProcess:
    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.started_at = time.time()
        self.errors = LastError()
        self.last_progress_at: float | None = None
        self._progress = -1
        self.done = threading.Event()

    def write(self, status: dict[str, Any], **extra: Any) -> None:
        count = progress_count(status)
        if count != self._progress:
            if self._progress >= 0:
                self.last_progress_at = time.time()
            self._progress = count
        write_status(self.directory, self.name, {
            "part": self.name, "pid": os.getpid(), "started_at": self.started_at, "heartbeat_at": time.time(),
            "last_progress_at": self.last_progress_at, "last_error": self.errors.message,
            "last_error_at": self.errors.at, "status": status, **extra})

    def run(self) -> int:
        logging.getLogger("boxoffice").addHandler(self.errors)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.done.set())
        parent = os.getppid()
        try:
            part = build_part(firestore_client(), self.name)
        except Exception as exc:  # noqa: BLE001 - recorded, then the supervisor restarts us
            kv(log, logging.ERROR, "part.build_failed", part=self.name, error=f"{type(exc).__name__}: {exc}")
            self.write({"alive": False}, traceback=traceback.format_exc()[-2000:])
            return 1
        status = part.status()
        if status.get("skipped"):
            self.write(status)
            return EXIT_SKIPPED
        part.start()
        kv(log, logging.INFO, "part.started", part=self.name, pid=os.getpid())
        code = 0
        try:
            while not self.done.wait(HEARTBEAT_S):
                status = part.status()
                self.write(status)
                if os.getppid() != parent:
                    kv(log, logging.WARNING, "part.orphaned", part=self.name)
                    break
                if not status.get("alive", True):
                    kv(log, logging.ERROR, "part.died", part=self.name)
                    code = 1
                    break
        finally:
            part.stop(5.0)
            self.write(part.status(), stopped=True)
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--dir", required=True, type=Path, help="The worker's status directory.")
    parser.add_argument("--log-level", default=os.environ.get("BOXOFFICE_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    configure(args.log_level)
    return PartProcess(args.name, args.dir).run()


if __name__ == "__main__":  # pragma: no cover - the supervisor's children
    sys.exit(main())
