"""Measure the subscribers' flow control and thread counts side by side, in one run.

For each setting: a fresh event, ORDERS purchases (one ticket each, a share of them cancelled),
every message published first (a backlog), then the email and analytics subscribers started
with that setting and timed until drained (first -> last processed record, overall and per
subscription). Same emulators, same SMTP server (a process of its own, as `simulate` runs it),
one after another; purchases go through an allocator process. Prints one line per setting and a
JSON summary.

    .venv/bin/python benchmarks/subscriber_settings.py [ORDERS]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

from google.cloud.firestore_v1.base_query import FieldFilter


def main(orders: int = 400) -> None:
    from boxoffice.messaging import email
    from boxoffice.messaging.backlog import drain
    from boxoffice.messaging.relay import sweep
    from boxoffice.messaging.topology import default_topology, delete_topology, ensure_topology, publisher_client
    from boxoffice.runtime.allocator import AllocatorProcesses
    from boxoffice.runtime.emulators import firestore_client, running_stack
    from boxoffice.runtime.mailbox import start_process, stop_process
    from boxoffice.runtime.messaging_runner import SubscriberSettings, build_loops
    from boxoffice.services.cancellations import cancel_order
    from boxoffice.services.events import create_event
    from boxoffice.services.purchasing import purchase_tickets
    from boxoffice.services.users import register_users

    variants = [
        SubscriberSettings(batch=100, pullers=1, smtp_connections=8),
        SubscriberSettings(batch=500, pullers=1, smtp_connections=8),
        SubscriberSettings(batch=500, pullers=2, smtp_connections=8),
        SubscriberSettings(batch=500, pullers=4, smtp_connections=8),
        SubscriberSettings(batch=500, pullers=2, smtp_connections=4),
        SubscriberSettings(batch=500, pullers=2, smtp_connections=16),
    ]
    rows = []
    with running_stack() as stack, tempfile.TemporaryDirectory() as tmp, \
            AllocatorProcesses(stack.firestore_host, stack.pubsub_host, stack.project):
        db = firestore_client(stack)
        smtp_pid, smtp_address = start_process(Path(tmp) / "mail", Path(tmp) / "smtp.log")
        try:
            for i, settings in enumerate(variants):
                topology = default_topology(stack.project, suffix=f".bench{i}{int(time.time())}")
                ensure_topology(topology)
                event = create_event(db, name=f"Bench {i}", venue="Hall",
                                     starts_at=datetime.now(timezone.utc) + timedelta(days=30), price=1000,
                                     currency="EUR", capacity=orders, per_order_max=1)
                users = [f"b{i}-{n}" for n in range(orders)]
                register_users(db, [(u, f"{u}@bench.test", None) for u in users])
                with ThreadPoolExecutor(32) as pool:
                    bought = list(pool.map(lambda u: purchase_tickets(db, event.id, u, 1, "k").order, users))
                    list(pool.map(lambda o: cancel_order(db, o.id, o.user_id), bought[: orders // 5]))
                publisher = publisher_client(batch_max_messages=500)
                while sweep(db, publisher, topology, limit=500).full:
                    pass
                mailer = email.Mailer(email.SmtpSettings.from_address(smtp_address), settings.smtp_connections)
                loops = build_loops(db, topology, mailer, relay=False, settings=settings)
                t0 = time.monotonic()
                loops.start()
                report = drain(db, topology, timeout_s=600, poll_s=0.2, event_id=event.id)
                wall = time.monotonic() - t0
                loops.stop()
                mailer.close()
                delete_topology(topology)
                records = [s.to_dict() or {} for s in db.collection("processed_messages")
                           .where(filter=FieldFilter("event_id", "==", event.id)).stream()]
                stamps = [r["processed_at"] for r in records]
                span = (max(stamps) - min(stamps)).total_seconds()
                # Per subscription: which one bounds the drain (its last record, from the first of all).
                last_s = {sub: round((max(r["processed_at"] for r in records if r["subscription"] == sub)
                                      - min(stamps)).total_seconds(), 2)
                          for sub in sorted({r["subscription"] for r in records})}
                row = {**asdict(settings), "messages": len(stamps), "handled_per_s": round(len(stamps) / span, 1),
                       "last_record_s": last_s, "drain_wall_s": round(wall, 2), "drained": report.drained}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            stop_process(smtp_pid)
            db.close()
    print(json.dumps({"orders": orders, "rows": rows}, indent=1))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
