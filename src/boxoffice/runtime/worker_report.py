"""What `boxoffice worker status` shows: every running worker's parts, and the backlog.

Per part (from the status files, part_status.py): state, pid, restarts, last exit, last error,
seconds since its last progress and its own counters. Then the work waiting, read from the
database (the emulator has no backlog metric; on real Pub/Sub, Cloud Monitoring's
``subscription/num_undelivered_messages`` says the same):
- ``outbox_unpublished``: outbox messages the relay has not published yet;
- ``undelivered``: per subscription, messages of its types without a processed record (nor
  dead-lettered): published or not, not handled yet;
- ``dead_letters``: messages a subscriber gave up on (``message_failures`` marked dead-lettered);
- ``summary``: the inventory trigger's own figures (events pending, lag p99 of the changes it
  reflected) and, with ``event_id``, how far that event's summary is behind its newest shard.
A dependency that does not answer is reported as such (``error``), not raised.
"""

from __future__ import annotations

import time
from datetime import UTC
from pathlib import Path
from typing import Any

from boxoffice.domain.availability import is_reflected
from boxoffice.messaging.backlog import backlog
from boxoffice.runtime.part_status import WorkerView, read_workers
from boxoffice.store.documents import event_ref, inventory_col
from boxoffice.store.messaging import FAILURES

TRIGGER = "inventory-trigger"


def _seconds_since(t: float | None, now: float) -> float | None:
    return round(now - float(t), 1) if t else None


def parts_rows(workers: list[WorkerView], now: float | None = None) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    rows = []
    for w in workers:
        for p in w.parts:
            rows.append({"worker": w.worker_id, "part": p.name, "state": p.state, "pid": p.pid,
                         "restarts": p.restarts, "last_exit": p.last_exit, "last_error": p.last_error,
                         "last_error_age_s": _seconds_since(p.last_error_at, now),
                         "last_progress_age_s": _seconds_since(p.last_progress_at, now), "status": p.status})
    return rows


def backlog_report(db: Any, topology: Any) -> dict[str, Any]:
    from google.cloud.firestore_v1.base_query import FieldFilter


    try:
        unpublished, per_sub = backlog(db, topology)
        dead = db.collection(FAILURES).where(filter=FieldFilter("dead_lettered", "==", True)).count().get()
        return {"outbox_unpublished": unpublished, "undelivered": per_sub, "dead_letters": int(dead[0][0].value)}
    except Exception as exc:  # noqa: BLE001 - status must work while Firestore is down
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def summary_report(db: Any, workers: list[WorkerView], event_id: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    triggers = [p.status for w in workers for p in w.parts if p.name == TRIGGER and p.alive]
    if triggers:
        out["pending_events"] = sum(int(s.get("pending_events") or 0) for s in triggers)
        lags = [s["lag_p99_s"] for s in triggers if s.get("lag_p99_s") is not None]
        out["lag_p99_s"] = max(lags) if lags else None
    if event_id:
        out["event"] = event_summary_lag(db, event_id)
    return out


def event_summary_lag(db: Any, event_id: str) -> dict[str, Any]:
    """How far ``event_id``'s summary is behind its newest shard commit (0: it reflects it)."""
    from datetime import datetime


    try:
        summary = (event_ref(db, event_id).get().to_dict() or {}).get("summary") or {}
        newest = max((s.update_time for s in inventory_col(db, event_id).stream()), default=None)
    except Exception as exc:  # noqa: BLE001 - status must work while Firestore is down
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    if newest is None or is_reflected(summary, newest):
        return {"event_id": event_id, "reflected": True, "behind_s": 0.0}
    return {"event_id": event_id, "reflected": False,
            "behind_s": round((datetime.now(UTC) - newest).total_seconds(), 2)}


def worker_report(state_dir: Path, db: Any, topology: Any, *, event_id: str | None = None,
                  include_stopped: bool = False) -> dict[str, Any]:
    workers = read_workers(state_dir, include_stopped=include_stopped)
    report: dict[str, Any] = {"workers": [{"worker_id": w.worker_id, "pid": w.pid, "alive": w.alive}
                                          for w in workers],
                              "parts": parts_rows(workers)}
    if db is not None:
        report["backlog"] = backlog_report(db, topology)
        report["summary"] = summary_report(db, workers, event_id)
    return report
