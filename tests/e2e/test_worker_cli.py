"""`boxoffice worker` and `boxoffice worker status` end to end, as separate OS processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from boxoffice.runtime.emulators import pid_alive
from boxoffice.runtime.worker import wait_until


def _env(stack, tmp_path):
    return dict(os.environ, FIRESTORE_EMULATOR_HOST=stack.firestore_host, GOOGLE_CLOUD_PROJECT=stack.project,
                BOXOFFICE_STATE_DIR=str(tmp_path))


def _status(env):
    done = subprocess.run([sys.executable, "-m", "boxoffice.cli", "worker", "status", "--json"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_worker_runs_each_part_as_a_process_and_status_reads_them_from_another_process(stack, db, tmp_path):
    env = _env(stack, tmp_path)
    worker = subprocess.Popen([sys.executable, "-m", "boxoffice.cli", "worker", "--id", "e2e",
                               "--only", "inventory-trigger", "--only", "hold-sweeper"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: sum(1 for p in _status(env)["parts"] if p["state"] == "running"
                                      and p["status"].get("alive")) == 2, 90), _status(env)
        report = _status(env)
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=60)
    parts = {p["part"]: p for p in report["parts"]}
    assert set(parts) == {"inventory-trigger", "hold-sweeper"}
    pids = {p["pid"] for p in parts.values()}
    assert len(pids) == 2 and worker.pid not in pids  # one process per part, none of them the supervisor
    assert all(p["worker"] == "e2e" and p["restarts"] == 0 for p in parts.values())
    assert set(report["backlog"]) == {"outbox_unpublished", "undelivered", "dead_letters"}
    assert set(report["backlog"]["undelivered"]) == {"email", "analytics"}
    assert worker.returncode == 0, err
    time.sleep(0.5)
    assert not any(pid_alive(pid) for pid in pids)  # the parts stopped with their supervisor
    assert _status(env)["parts"] == []
