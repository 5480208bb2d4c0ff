"""The messaging pipeline against the real Firestore and Pub/Sub emulators and a real SMTP server.

Each test gets its own topics and subscriptions (a unique suffix), short retry backoff and the
minimum ack deadline (10 s), so tests stay fast and never see each other's messages.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.loadtest.pipeline_checks import audit_pipeline, pipeline_figures
from boxoffice.messaging import analytics, deadletter, email, wire
from boxoffice.messaging.backlog import drain
from boxoffice.messaging.relay import OutboxRelay, publish_one, sweep
from boxoffice.messaging.subscribers import Subscription, pull_batch
from boxoffice.messaging.topology import (
    ANALYTICS,
    EMAIL,
    SubscriptionSpec,
    Topology,
    default_topology,
    delete_topology,
    ensure_topology,
    publisher_client,
    subscriber_client,
)
from boxoffice.runtime.mailbox import Mailbox
from boxoffice.runtime.messaging_runner import build_loops, subscriber_for
from boxoffice.runtime.worker import wait_until
from boxoffice.services.cancellations import cancel_order
from boxoffice.services.events import create_event
from boxoffice.services.purchasing import purchase_tickets
from boxoffice.services.users import register_users
from boxoffice.store.documents import OUTBOX


@pytest.fixture
def topology(stack):
    topo = default_topology(stack.project, suffix=f".t{uuid.uuid4().hex[:8]}", emulator=True).with_policies(
        ack_deadline_s=10, min_backoff_s=0.1, max_backoff_s=0.5)
    ensure_topology(topo)
    yield topo
    delete_topology(topo)


@pytest.fixture
def mailer(smtp):
    m = email.Mailer(email.SmtpSettings.from_address(smtp.address))
    yield m
    m.close()


def _event(db, capacity=100):
    return create_event(db, name="Gig", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=30),
                        price=2500, currency="EUR", capacity=capacity, per_order_max=4)


def _buy(db, event, n, *, register=True, quantity=1):
    users = [f"u{i:03d}" for i in range(n)]
    if register:
        register_users(db, [(u, f"{u}@example.test", f"User {u}") for u in users])
    return [purchase_tickets(db, event.id, u, quantity, f"k-{u}").order for u in users]


def _subs(db, topology, mailer):
    pub = publisher_client()
    return {
        EMAIL: Subscription(db, topology, topology.spec(EMAIL), lambda d: email.handle_email(db, mailer, d), pub),
        ANALYTICS: Subscription(db, topology, topology.spec(ANALYTICS), lambda d: analytics.handle_analytics(db, d), pub),
    }


def _pull_until(sub, subscriber, want_processed, db, timeout=40):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pull_batch(sub, subscriber, 50)
        done = len(list(db.collection("processed_messages")
                        .where(filter=FieldFilter("subscription", "==", sub.spec.name)).stream()))
        if done >= want_processed:
            return done
        time.sleep(0.2)
    raise AssertionError(f"{sub.spec.name}: only {done} of {want_processed} processed")


def test_the_same_outbox_message_published_twice_yields_one_email(db, topology, smtp, mailer):
    event = _event(db)
    (order,) = _buy(db, event, 1, quantity=2)
    pub = publisher_client()
    assert sweep(db, pub, topology).published == 1
    # A relay that crashed after publishing and before marking publishes it again.
    db.collection(OUTBOX).document(f"{order.id}.confirmed").update({"published_at": None})
    assert sweep(db, pub, topology).published == 1

    subs, subscriber = _subs(db, topology, mailer), subscriber_client()
    _pull_until(subs[EMAIL], subscriber, 1, db)
    _pull_until(subs[ANALYTICS], subscriber, 1, db)
    time.sleep(0.5)
    for name in (EMAIL, ANALYTICS):  # the second copy arrives too, and is acked as a duplicate
        pull_batch(subs[name], subscriber, 50)
    assert subs[EMAIL].stats.outcomes["sent"] == 1
    assert subs[EMAIL].stats.outcomes["duplicate"] == 1
    assert len(smtp.mailbox.items()) == 1
    mail = smtp.mailbox.items()[0]
    assert (mail.kind, mail.order_id, mail.to) == ("order_confirmed", order.id, ["u000@example.test"])
    stats = analytics.read_stats(db, event.id)
    assert (stats.orders, stats.tickets_sold, stats.revenue) == (1, 2, 5000)


def test_a_subscriber_killed_mid_batch_and_restarted_applies_every_effect_once(db, topology, smtp, mailer):
    event = _event(db)
    orders = _buy(db, event, 6)
    assert sweep(db, publisher_client(), topology).published == 6
    subs, subscriber = _subs(db, topology, mailer), subscriber_client()
    # Crash: three messages handled (effects written) but none of the batch acked.
    deadline = time.monotonic() + 10
    crashed: list = []
    while len(crashed) < 3 and time.monotonic() < deadline:
        crashed += pull_batch(subs[EMAIL], subscriber, 6, stop_after=3 - len(crashed))
    assert len(crashed) == 3
    assert len(smtp.mailbox.items()) == 3
    # Restart: a new subscriber gets every unacked message back after the ack deadline.
    restarted = _subs(db, topology, mailer)
    _pull_until(restarted[EMAIL], subscriber, 6, db, timeout=40)
    _pull_until(restarted[ANALYTICS], subscriber, 6, db, timeout=40)
    items = smtp.mailbox.items()
    assert sorted(i.order_id for i in items) == sorted(o.id for o in orders)  # each once, none twice
    assert analytics.read_stats(db, event.id).tickets_sold == 6


@pytest.mark.parametrize("name", [EMAIL, ANALYTICS])
def test_a_message_that_always_fails_reaches_the_dead_letter_topic_after_the_set_attempts(db, topology, name):
    event = _event(db)
    _buy(db, event, 1)
    pub, subscriber = publisher_client(), subscriber_client()
    sweep(db, pub, topology)
    calls = []

    def poison(d):
        calls.append(d.message_id)
        raise ValueError("cannot handle this")

    sub = Subscription(db, topology, topology.spec(name), poison, pub)
    deadline = time.monotonic() + 40
    while sub.stats.outcomes["dead_lettered"] == 0 and time.monotonic() < deadline:
        pull_batch(sub, subscriber, 10)
        time.sleep(0.1)
    assert len(calls) == topology.spec(name).max_delivery_attempts == 5
    letters = deadletter.list_dead_letters(subscriber, topology, db)
    assert [(dl.subscription, dl.attempts) for dl in letters] == [(name, 5)]
    assert "cannot handle this" in letters[0].error
    # Nothing more is delivered on the main subscription.
    time.sleep(0.6)
    assert pull_batch(sub, subscriber, 10) == []
    # Replay sends it back; a handler that now works handles it, and the dead-letter topic is empty.
    replayed = deadletter.replay(subscriber, pub, topology, db)
    assert [dl.message_id for dl in replayed] == [letters[0].message_id]
    healed = Subscription(db, topology, topology.spec(name), lambda d: "counted", pub)
    deadline = time.monotonic() + 20
    while healed.stats.outcomes["counted"] == 0 and time.monotonic() < deadline:
        pull_batch(healed, subscriber, 10)
    assert healed.stats.outcomes["counted"] == 1
    assert deadletter.dead_letter_count(subscriber, topology) == 0


def test_messages_of_one_event_are_handled_in_order(db, topology, stack):
    """The transport guarantee a consumer that needs per-event order relies on: the relay
    publishes in commit order with the event id as ordering key, and an ORDERED subscription
    gets a subscriber (subscriber_for) that hands one event's messages over one at a time, in
    that order. (Fails if it got the parallel subscriber that email and analytics use.)"""
    event = _event(db)
    _buy(db, event, 25)
    expected = [s.id for s in db.collection(OUTBOX).order_by("created_at").stream()]
    spec = SubscriptionSpec("timeline", ("order.confirmed",), ordered=True, ack_deadline_s=10,
                            min_backoff_s=0.1, max_backoff_s=0.5)
    ordered = Topology(topology.project, topology.suffix + ".ord", (spec,))
    ensure_topology(ordered)
    seen: list[str] = []

    def recording(d):
        time.sleep(random.uniform(0, 0.02))  # a parallel, unordered delivery would overtake here
        seen.append(d.message_id)
        return "recorded"

    subscriber = subscriber_for(Subscription(db, ordered, spec, recording, publisher_client()), threads=8)
    subscriber.start()
    try:
        assert sweep(db, publisher_client(), ordered).published == 25
        assert wait_until(lambda: len(seen) >= 25, timeout_s=60)
    finally:
        subscriber.stop()
        delete_topology(ordered)
    assert seen == expected


def test_emails_are_handled_in_parallel_and_a_cancellation_email_never_precedes_its_confirmation(
        db, topology, smtp, mailer):
    event = _event(db)
    orders = _buy(db, event, 12)
    cancelled = orders[:4]
    for o in cancelled:
        cancel_order(db, o.id, o.user_id)
    # Worst case: the cancellations reach Pub/Sub first, the confirmations 0.5 s later.
    pub = publisher_client()
    for snap in db.collection(OUTBOX).where(filter=FieldFilter("type", "==", "order.cancelled")).stream():
        publish_one(db, pub, topology, snap.id, snap.to_dict())
    in_flight, peak = [0], [0]
    lock = threading.Lock()

    class SlowConfirmations(email.Mailer):
        def send(self, msg):
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            try:
                if msg["X-Boxoffice-Kind"] == "order_confirmed":
                    time.sleep(0.3)  # the cancellation of the same order is pulled meanwhile
                super().send(msg)
            finally:
                with lock:
                    in_flight[0] -= 1

    slow = SlowConfirmations(mailer.settings, connections=8)
    loops = build_loops(db, topology, slow, relay=False, subscriptions=(EMAIL, ANALYTICS))
    loops.start()
    try:
        time.sleep(0.5)
        assert sweep(db, pub, topology).published == 12
        report = drain(db, topology, timeout_s=60, poll_s=0.2, event_id=event.id)
    finally:
        loops.stop()
    assert report.drained, report
    slow.close()
    assert peak[0] > 1  # sent in parallel over the pool, not one after another
    assert loops.subscribers[0].stats.outcomes["deferred"] >= 1
    items = smtp.mailbox.items()  # in the order the SMTP server received them
    for o in cancelled:
        kinds = [i.kind for i in items if i.order_id == o.id]
        assert kinds == ["order_confirmed", "order_cancelled"], (o.id, kinds)
    assert audit_pipeline(db, event.id, smtp.mailbox, topology=topology) == []


def test_a_cancellation_email_waits_for_the_confirmation_email_of_its_order(db, topology, smtp, mailer):
    event = _event(db)
    (order,) = _buy(db, event, 1)
    cancel_order(db, order.id, order.user_id)
    msgs = {s.id: s.to_dict() for s in db.collection(OUTBOX).stream()}
    cancel_id = next(m for m, d in msgs.items() if d["type"] == "order.cancelled")

    def delivered(mid, created_at=None):
        d = msgs[mid]
        return wire.Delivered(mid, d["type"], event.id, d["payload"], created_at or d["created_at"])

    with pytest.raises(email.ConfirmationNotSentYet):
        email.handle_email(db, mailer, delivered(cancel_id))
    assert smtp.mailbox.items() == []  # deferred before claiming: nothing sent, nothing recorded
    assert email.handle_email(db, mailer, delivered(f"{order.id}.confirmed")) == "sent"
    assert email.handle_email(db, mailer, delivered(cancel_id)) == "sent"
    assert [i.kind for i in smtp.mailbox.items()] == ["order_confirmed", "order_cancelled"]


def test_a_cancellation_whose_confirmation_is_stuck_is_sent_after_the_causality_wait(db, topology, smtp, mailer):
    event = _event(db)
    (order,) = _buy(db, event, 1)
    cancel_order(db, order.id, order.user_id)
    mid, doc = next((s.id, s.to_dict()) for s in db.collection(OUTBOX).stream()
                    if s.to_dict()["type"] == "order.cancelled")
    old = datetime.now(UTC) - timedelta(seconds=email.CAUSALITY_WAIT_S + 1)
    assert email.handle_email(db, mailer, wire.Delivered(mid, doc["type"], event.id, doc["payload"], old)) == "sent"
    assert [i.kind for i in smtp.mailbox.items()] == ["order_cancelled"]


def test_a_relay_restart_loses_nothing_and_the_audit_passes(db, topology, smtp, mailer):
    event = _event(db)
    loops = build_loops(db, topology, mailer).start()
    try:
        orders = _buy(db, event, 10)
        loops.relay.stop()  # the relay dies mid-sale...
        orders += [purchase_tickets(db, event.id, f"u{i:03d}", 1, f"k2-{i}").order for i in range(10)]
        loops.relay = OutboxRelay(db, topology).start()  # ...and a new one starts
        report = drain(db, topology, timeout_s=60, poll_s=0.2)
    finally:
        loops.stop()
    assert report.drained, report
    assert audit_pipeline(db, event.id, smtp.mailbox, topology=topology) == []
    assert len(smtp.mailbox.items()) == 20
    figures = pipeline_figures(db, event.id)
    assert figures.messages == 40 and figures.emails == 20
    assert figures.lag_p50_s is not None and figures.lag_p50_s >= 0


def test_the_audit_reports_a_missing_email_and_wrong_analytics(db, topology, smtp, mailer):
    event = _event(db)
    _buy(db, event, 2)
    problems = audit_pipeline(db, event.id, smtp.mailbox, topology=topology)
    assert any("0 confirmation emails" in p for p in problems)
    assert any("analytics tickets_sold=0" in p for p in problems)
    assert any("unpublished" in p for p in problems)


def test_a_user_without_email_is_skipped_and_acked(db, topology, smtp, mailer):
    event = _event(db)
    _buy(db, event, 1, register=False)
    sweep(db, publisher_client(), topology)
    subs, subscriber = _subs(db, topology, mailer), subscriber_client()
    _pull_until(subs[EMAIL], subscriber, 1, db)
    assert subs[EMAIL].stats.outcomes["skipped"] == 1
    assert smtp.mailbox.items() == []


# --- batches ---------------------------------------------------------------------------------


def _delivered(db, *types):
    out = []
    for snap in db.collection(OUTBOX).order_by("created_at").stream():
        doc = snap.to_dict()
        if not types or doc["type"] in types:
            data, attrs = wire.encode(snap.id, doc)
            out.append(wire.decode(data, attrs))
    return out


def test_an_analytics_batch_is_one_commit_per_event_and_a_redelivered_message_changes_nothing(db):
    a, b = _event(db), _event(db)
    _buy(db, a, 5, register=False)
    purchase_tickets(db, b.id, "zed", 2, "kz")
    messages = _delivered(db, "order.confirmed")
    assert analytics.handle_analytics(db, messages[0]) == "counted"  # counted earlier, redelivered now
    outcomes = analytics.handle_analytics_batch(db, messages)
    assert outcomes[messages[0].message_id] == "duplicate"
    assert sorted(v for k, v in outcomes.items() if k != messages[0].message_id) == ["counted"] * 5
    assert (analytics.read_stats(db, a.id).orders, analytics.read_stats(db, a.id).tickets_sold) == (5, 5)
    assert (analytics.read_stats(db, b.id).orders, analytics.read_stats(db, b.id).revenue) == (1, 5000)
    # One commit per event: the batch's processed records of an event share one commit time.
    for event in (a, b):
        times = {s.get("processed_at") for s in db.collection("processed_messages")
                 .where(filter=FieldFilter("event_id", "==", event.id)).stream()
                 if s.id != f"analytics--{messages[0].message_id}"}
        assert len(times) == 1, (event.id, times)
    assert set(analytics.handle_analytics_batch(db, messages).values()) == {"duplicate"}
    assert analytics.read_stats(db, a.id).orders == 5


def test_a_message_counted_by_another_worker_after_the_read_is_left_out_and_the_rest_counted(db, monkeypatch):
    event = _event(db)
    _buy(db, event, 6, register=False)
    messages = _delivered(db, "order.confirmed")
    real = analytics._already_counted
    stale = iter([set()])  # the first read happens before the other worker's commit

    def read(db_, batch):
        try:
            return next(stale)
        except StopIteration:
            return real(db_, batch)

    assert analytics.handle_analytics(db, messages[2]) == "counted"  # the other worker
    monkeypatch.setattr(analytics, "_already_counted", read)
    outcomes = analytics.handle_analytics_batch(db, messages)
    assert outcomes[messages[2].message_id] == "duplicate"
    assert list(outcomes.values()).count("counted") == 5
    stats = analytics.read_stats(db, event.id)
    assert (stats.orders, stats.tickets_sold, stats.revenue) == (6, 6, 15000)


def test_two_workers_folding_the_same_batch_at_once_count_each_message_once(db):
    event = _event(db)
    _buy(db, event, 40, register=False)
    messages = _delivered(db, "order.confirmed")
    barrier = threading.Barrier(2)
    results = []

    def worker():
        barrier.wait()
        results.append(analytics.handle_analytics_batch(db, messages))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for mid in (m.message_id for m in messages):
        assert sorted(r[mid] for r in results) == ["counted", "duplicate"], mid
    assert analytics.read_stats(db, event.id).orders == 40


def test_an_email_batch_sends_each_email_once_and_a_cancellation_after_its_confirmation(db, smtp, mailer):
    event = _event(db)
    orders = _buy(db, event, 6)
    cancel_order(db, orders[0].id, orders[0].user_id)
    messages = _delivered(db, "order.confirmed", "order.cancelled")
    messages.sort(key=lambda d: d.type != "order.cancelled")  # the cancellation first in the batch
    assert email.handle_email(db, mailer, messages[-1]) == "sent"  # sent earlier, redelivered now
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        outcomes = email.handle_email_batch(db, mailer, messages, run=pool.map)
    assert outcomes[messages[-1].message_id] == "duplicate"
    assert list(outcomes.values()).count("sent") == 6
    items = smtp.mailbox.items()
    assert len(items) == 7 and len({i.message_id for i in items}) == 7
    kinds = [i.kind for i in items if i.order_id == orders[0].id]
    assert kinds == ["order_confirmed", "order_cancelled"]
    assert set(email.handle_email_batch(db, mailer, messages).values()) == {"duplicate"}
    assert len(smtp.mailbox.items()) == 7


def test_two_workers_with_the_same_email_batch_send_each_email_once(db, smtp, mailer):
    event = _event(db)
    _buy(db, event, 20)
    messages = _delivered(db, "order.confirmed")
    barrier = threading.Barrier(2)
    results = []

    def worker():
        barrier.wait()
        results.append(email.handle_email_batch(db, mailer, messages))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    items = smtp.mailbox.items()
    assert len(items) == 20 and len({i.message_id for i in items}) == 20
    for mid in (m.message_id for m in messages):
        outcomes = [r[mid] for r in results]
        assert [o for o in outcomes if o == "sent"] == ["sent"], (mid, outcomes)


def test_a_relay_without_the_listener_publishes_by_polling(db, topology):
    event = _event(db)
    from boxoffice.messaging.relay import RelaySettings

    relay = OutboxRelay(db, topology, settings=RelaySettings(listen=False, poll_s=0.1)).start()
    try:
        _buy(db, event, 5, register=False)
        assert wait_until(lambda: not list(db.collection(OUTBOX).where(
            filter=FieldFilter("published_at", "==", None)).stream()), timeout_s=60)
    finally:
        relay.stop()
    assert relay._watch is None and relay.published == 5


def test_analytics_count_each_ticket_type_of_mixed_orders_and_of_their_cancelled_lines(db, tmp_path):
    types = {"types": [
        {"id": "stalls", "name": "Stalls", "price": 5000, "capacity": 10},
        {"id": "standing", "name": "Standing", "price": 2000, "capacity": 10},
    ]}
    event = create_event(db, name="Typed", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=3),
                         per_order_max=6, per_user_limit=10, types=types)
    first = purchase_tickets(db, event.id, "ann", None, "k1", types={"stalls": 2, "standing": 1}).order
    purchase_tickets(db, event.id, "bob", None, "k2", types={"standing": 3})
    cancel_order(db, first.id, "ann", types={"stalls": 1})
    messages = _delivered(db, "order.confirmed", "order.cancelled")
    assert set(analytics.handle_analytics_batch(db, messages).values()) == {"counted"}
    stats = analytics.read_stats(db, event.id)
    assert (stats.orders, stats.tickets_sold, stats.revenue) == (2, 6, 2 * 5000 + 4 * 2000)
    assert (stats.tickets_cancelled, stats.refunds) == (1, 5000)
    assert stats.types == {
        "stalls": {"orders": 1, "tickets_sold": 2, "revenue": 10000, "tickets_cancelled": 1, "refunds": 5000},
        "standing": {"orders": 2, "tickets_sold": 4, "revenue": 8000, "tickets_cancelled": 0, "refunds": 0},
    }
    # No email was sent here (the audit says so), but the analytics, per type included, agree
    # with the orders and refunds.
    problems = audit_pipeline(db, event.id, Mailbox(tmp_path), check_dead_letters=False)
    assert any("confirmation emails" in p for p in problems)
    assert [p for p in problems if "analytics" in p] == []
