"""Where the machine's CPU went during a phase of a load test (Linux ``/proc``; elsewhere None).

On a 2-core machine the emulators, the worker's parts and the local SMTP server share the cores,
so a throughput figure means little without knowing whether the machine was saturated. A phase
is bracketed by two ``sample()`` calls, or a ``Recorder`` samples every quarter second and
``between`` picks the samples around a window known afterwards (first to last message handled);
``usage`` gives the share of the machine that was busy and the CPU seconds of each kind of
process (by command line).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (label, a string of the command line): the first match names a process.
KINDS: tuple[tuple[str, str], ...] = (
    ("firestore emulator", "cloud-firestore-emulator"),
    ("pubsub emulator", "pubsub-emulator"),
    ("auth emulator", "firebase"),
    ("smtp server", "boxoffice.runtime.mailbox"),
    ("email subscriber", "part_process subscriber-email"),
    ("analytics subscriber", "part_process subscriber-analytics"),
    ("outbox relay", "part_process outbox-relay"),
    ("inventory trigger", "part_process inventory-trigger"),
    ("allocator", "part_process allocator"),
)


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.time()
    busy_ticks: int  # machine-wide, all cores
    total_ticks: int
    per_pid: dict[int, tuple[int, str]] = field(default_factory=dict)  # pid -> (utime + stime, kind)


def _kind(cmdline: str) -> str:
    return next((label for label, needle in KINDS if needle in cmdline), "other")


def sample() -> CpuSample | None:
    """The machine's and every process's CPU ticks now (None without /proc)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    per_pid: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue  # ended meanwhile
        per_pid[int(entry)] = (int(stat[11]) + int(stat[12]), _kind(cmdline))
    return CpuSample(time.time(), sum(fields) - idle, sum(fields), per_pid)


def usage(before: CpuSample | None, after: CpuSample | None) -> dict[str, Any] | None:
    """Between two samples: the busy share of the whole machine (1.0 = every core busy) and CPU
    seconds per kind of process (a process started in between counts from zero)."""
    if before is None or after is None or after.total_ticks <= before.total_ticks:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    seconds: dict[str, float] = {}
    for pid, (ticks, kind) in after.per_pid.items():
        spent = ticks - before.per_pid.get(pid, (0, kind))[0]
        if spent > 0:
            seconds[kind] = seconds.get(kind, 0.0) + spent / hz
    return {
        "wall_s": round(after.at - before.at, 2),
        "cores": os.cpu_count(),
        "machine_busy": round((after.busy_ticks - before.busy_ticks) / (after.total_ticks - before.total_ticks), 3),
        "cpu_s": {k: round(v, 2) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])},
    }


class Recorder:
    """Samples every ``every_s`` on a thread while running (``with Recorder() as r: ...``)."""

    def __init__(self, every_s: float = 0.25) -> None:
        self.every_s = every_s
        self.samples: list[CpuSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-recorder", daemon=True)

    def _run(self) -> None:
        while True:
            got = sample()
            if got is not None:
                self.samples.append(got)
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def between(self, start: float, end: float) -> dict[str, Any] | None:
        """``usage`` from the last sample at or before ``start`` to the first at or after ``end``
        (``time.time()`` values); None when the recording does not cover the window."""
        before = [s for s in self.samples if s.at <= start]
        after = [s for s in self.samples if s.at >= end]
        if not before or not after:
            return None
        return usage(before[-1], after[0])
