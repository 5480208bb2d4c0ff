"""SIGKILL an event's allocator mid-run: the lease holder, once enough requests were answered."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Collection
from typing import Any

from boxoffice.store.leases import LEASES


def kill_the_lease_holder(db: Any, event_id: str, ours: Collection[int], after_answers: int, killed: dict[str, Any],
                          running: threading.Event | None = None, give_up_s: float = 120.0) -> None:
    """Wait until ``after_answers`` requests were answered, then SIGKILL the process holding the
    event's allocator lease (which must be one of ``ours``) and record it in ``killed``."""
    give_up = time.monotonic() + give_up_s
    while time.monotonic() < give_up and (running is None or running.is_set()):
        lease = db.collection(LEASES).document(event_id).get()
        answered = len(list(db.collection("requests").select([]).limit(after_answers).stream()))
        if lease.exists and answered >= after_answers:
            pid = int(lease.get("holder").rsplit("-", 2)[1])
            assert pid in ours  # only ever a process this session started
            os.kill(pid, signal.SIGKILL)
            killed.update(pid=pid, epoch=lease.get("epoch"))
            return
        time.sleep(0.05)
