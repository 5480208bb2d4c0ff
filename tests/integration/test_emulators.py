"""The local stack against the real emulators."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from boxoffice.runtime import emulators as em


def test_stack_is_up(stack):
    assert stack.firestore_host.startswith("127.0.0.1:") or os.environ.get("FIRESTORE_EMULATOR_HOST")
    assert em.host_answers(stack.firestore_host)
    assert stack.pubsub_host and em.host_answers(stack.pubsub_host)
    assert os.environ["FIRESTORE_EMULATOR_HOST"] == stack.firestore_host
    assert os.environ["PUBSUB_EMULATOR_HOST"] == stack.pubsub_host
    assert os.environ["GOOGLE_CLOUD_PROJECT"] == stack.project


def test_document_round_trip_and_clear(stack):
    client = em.firestore_client(stack)
    try:
        ref = client.collection("smoke").document("a")
        ref.set({"n": 1, "name": "ticket"})
        assert ref.get().to_dict() == {"n": 1, "name": "ticket"}
        em.clear_firestore(stack, stack.project)
        assert not ref.get().exists
        assert list(client.collection("smoke").stream()) == []
    finally:
        client.close()


def test_db_fixture_starts_empty(db):
    assert list(db.collection("smoke").stream()) == []
    db.collection("smoke").document("b").set({"x": 1})  # left behind on purpose; next `db` clears it


def test_db_fixture_cleared_again(db):
    assert list(db.collection("smoke").stream()) == []


def test_nested_running_stack_reuses(stack):
    with em.running_stack(stack.project) as inner:
        assert inner.pids == ()
        assert inner.firestore_host == stack.firestore_host
        assert inner.pubsub_host == stack.pubsub_host


def test_pubsub_publish_and_pull(stack):
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    suffix = f"{os.getpid()}-{time.monotonic_ns()}"
    topic = publisher.topic_path(stack.project, f"smoke-{suffix}")
    sub = subscriber.subscription_path(stack.project, f"smoke-sub-{suffix}")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=sub, topic=topic)
    try:
        publisher.publish(topic, b"hello", kind="smoke").result(timeout=30)
        received = []
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            resp = subscriber.pull(subscription=sub, max_messages=10, timeout=10)
            received.extend(resp.received_messages)
        assert [m.message.data for m in received] == [b"hello"]
        assert received[0].message.attributes["kind"] == "smoke"
        subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in received])
    finally:
        subscriber.delete_subscription(subscription=sub)
        publisher.delete_topic(topic=topic)
        subscriber.close()


def test_stop_stack_kills_what_it_started(tmp_path):
    own = em.start_stack("demo-stoptest", state_dir=tmp_path)
    assert len(own.pids) == 2
    assert all(em.pid_alive(p) for p in own.pids)
    assert em.host_answers(own.firestore_host) and em.host_answers(own.pubsub_host)
    em.stop_stack(own)
    for pid in own.pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not em.host_answers(own.firestore_host)
    assert not em.host_answers(own.pubsub_host)
    em.stop_stack(own)  # idempotent


def test_a_sigterm_stops_the_emulators_a_running_stack_started(tmp_path):
    """`timeout` or a CI runner ends a test run with SIGTERM: the stack must still stop the
    emulators it started, by pid (the test session's `stack` fixture is this context)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")}
    env["BOXOFFICE_STATE_DIR"] = str(tmp_path)  # no recorded `dev up` stack to reuse
    code = ("import time\nfrom boxoffice.runtime.emulators import running_stack\n"
            "with running_stack('demo-sigterm', pubsub=False) as s:\n"
            "    print(' '.join(map(str, s.pids)), flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "stderr.log", "wb"))  # noqa: SIM115 - the child keeps it
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 180)
        assert ready, "the emulator did not start"
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 1 and em.pid_alive(pids[0]), (tmp_path / "stderr.log").read_text()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        assert not em.pid_alive(pids[0]), "the SIGTERMed run left its emulator running"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in pids:
            if em.pid_alive(pid):
                em.stop_emulator(pid)


def test_dev_cli_up_status_down(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from boxoffice.cli.dev import dev_app as app

    monkeypatch.setenv("BOXOFFICE_STATE_DIR", str(tmp_path))
    runner = CliRunner()
    r = runner.invoke(app, ["status", "--json"])
    assert r.exit_code == 1, r.output
    r = runner.invoke(app, ["up", "--json", "--no-pubsub"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    pids = info["pids"]
    try:
        assert info["running"] and not info["already_running"]
        assert (tmp_path / "stack.json").exists()
        r = runner.invoke(app, ["up", "--json"])
        assert r.exit_code == 0 and json.loads(r.stdout)["already_running"]
        r = runner.invoke(app, ["status"])
        assert r.exit_code == 0 and info["firestore_host"] in r.stdout
        # running_stack() reuses the recorded stack and starts nothing for Firestore
        monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
        with em.running_stack(pubsub=False) as s:
            assert s.firestore_host == info["firestore_host"] and s.pids == ()
    finally:
        r = runner.invoke(app, ["down", "--json"])
    assert r.exit_code == 0, r.output
    assert sorted(json.loads(r.stdout)["stopped"]) == sorted(pids)
    assert not (tmp_path / "stack.json").exists()
    assert not any(em.pid_alive(p) for p in pids)
    assert runner.invoke(app, ["down"]).exit_code == 0
    assert runner.invoke(app, ["status"]).exit_code == 1
