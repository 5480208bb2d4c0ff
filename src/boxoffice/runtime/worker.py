"""Background loops and a worker that hosts several of them in one process.

A loop is anything with a ``name``, ``start()``, ``stop(timeout)`` and ``status()``. Which loops
(the worker's parts) exist and how each is built is said in one place, runtime/root.py
(``PARTS``); `boxoffice worker` runs each part in an OS process of its own
(runtime/supervisor.py), tests may host several in one ``Worker``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from boxoffice.log import kv

log = logging.getLogger(__name__)


class BackgroundLoop(Protocol):
    name: str

    def start(self) -> object: ...  # some return self, for chaining

    def stop(self, timeout: float = 5.0) -> None: ...

    def status(self) -> dict[str, Any]: ...



class PeriodicLoop:
    """Calls ``tick()`` every ``interval_s`` in a thread; an error is logged and the loop goes on."""

    def __init__(self, name: str, tick: Callable[[], Any], interval_s: float) -> None:
        self.name = name
        self._tick = tick
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        self.errors = 0
        self.last_result: Any = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.last_result = self._tick()
                self.ticks += 1
            except Exception as exc:  # noqa: BLE001 - a loop must survive a bad tick
                self.errors += 1
                kv(log, logging.WARNING, "loop.tick_failed", loop=self.name, error=f"{type(exc).__name__}: {exc}")
            self._stop.wait(self._interval)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        alive = bool(self._thread and self._thread.is_alive())
        return {"alive": alive, "ticks": self.ticks, "errors": self.errors, "last_result": self.last_result}


class Worker:
    """Starts loops in order, stops them in reverse order."""

    def __init__(self, loops: Iterable[BackgroundLoop] = ()) -> None:
        self.loops: list[BackgroundLoop] = list(loops)

    def add(self, loop: BackgroundLoop) -> None:
        self.loops.append(loop)

    def start(self) -> None:
        for loop in self.loops:
            loop.start()
            kv(log, logging.INFO, "worker.loop_started", loop=loop.name)

    def stop(self, timeout: float = 5.0) -> None:
        for loop in reversed(self.loops):
            loop.stop(timeout)
            kv(log, logging.INFO, "worker.loop_stopped", loop=loop.name)

    def status(self) -> dict[str, Any]:
        return {loop.name: loop.status() for loop in self.loops}

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout_s``; whether it became true (tests, simulator)."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()
