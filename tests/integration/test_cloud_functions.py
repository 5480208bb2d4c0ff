"""Every deployable entry point of functions/main.py, invoked the way the platform invokes it,
against the real emulators.

firebase_functions' decorators turn each handler into a function of what the platform sends:
- Firestore triggers (Eventarc) get a ``cloudevents.http.CloudEvent`` whose data is a
  protobuf-encoded ``google.events.cloud.firestore.v1.DocumentEventData`` and whose extension
  attributes name the project, database, namespace and document; the SDK decodes it into a
  typed ``firestore_fn.Event`` with ``DocumentSnapshot``s and the path ``params``.
- Pub/Sub triggers get a CloudEvent of type ``messagePublished`` whose JSON data is the push
  envelope ``{"message": {"data": <base64>, "attributes", "messageId", "message_id", ...},
  "subscription"}``.
- Scheduled functions are HTTP functions that Cloud Scheduler POSTs to (headers
  ``X-CloudScheduler-JobName`` / ``-ScheduleTime``); the SDK builds the ``ScheduledEvent`` and
  answers 500 (swallowing the error) when the handler raises, so the tests check the status.
The events are built from the documents and messages the code really wrote and published.
"""

from __future__ import annotations

import base64
import importlib.util
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
from cloudevents.http import CloudEvent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def main() -> ModuleType:
    """functions/main.py, loaded as Firebase loads it (the module the functions are found in)."""
    spec = importlib.util.spec_from_file_location("boxoffice_functions_main", ROOT / "functions" / "main.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fresh_functions(stack, monkeypatch):
    """Each test starts like a cold function instance: no cached clients or mailer."""
    from boxoffice.runtime import pipeline_functions as messaging_cf
    from boxoffice.runtime import root

    root.reset_cloud()
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", stack.project)
    yield messaging_cf
    root.reset_cloud()


def test_main_exports_every_deployable_function(main):
    names = {"publish_outbox", "sweep_outbox", "email_subscriber", "analytics_subscriber",
             "on_inventory_written", "reconcile_inventory"}
    for name in names:
        fn = getattr(main, name)
        assert hasattr(fn, "__firebase_endpoint__"), name  # what the Firebase CLI discovers


# --- building what the platform sends --------------------------------------------------------


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event_document(snap):
    """A Firestore snapshot as Eventarc's ``google.events.cloud.firestore.v1.Document``."""
    from google.cloud.firestore_v1 import _helpers
    from google.cloud.firestore_v1.types import document as fs_document
    from google.events.cloud import firestore as ev_firestore

    doc = fs_document.Document(name=snap.reference._document_path, fields=_helpers.encode_dict(snap.to_dict()),
                               create_time=snap.create_time, update_time=snap.update_time)
    # Same wire format (field numbers) as the Firestore API's Document: re-read the bytes.
    return ev_firestore.Document.deserialize(fs_document.Document.serialize(doc))


def firestore_cloud_event(project: str, kind: str, path: str, before, after) -> CloudEvent:
    from google.events.cloud import firestore as ev_firestore

    data = ev_firestore.DocumentEventData(
        value=_event_document(after) if after is not None and after.exists else None,
        old_value=_event_document(before) if before is not None and before.exists else None,
    )
    when = (after if after is not None and after.exists else before).update_time
    attributes = {
        "specversion": "1.0",
        "type": f"google.cloud.firestore.document.v1.{kind}",
        "source": f"//firestore.googleapis.com/projects/{project}/databases/(default)",
        "subject": f"documents/{path}",
        "id": uuid.uuid4().hex,
        "time": _rfc3339(when),
        "datacontenttype": "application/protobuf",
        "dataschema": "https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/"
                      "cloud/firestore/v1/data.proto",
        "location": "nam5",
        "project": project,
        "database": "(default)",
        "namespace": "(default)",
        "document": path,
    }
    return CloudEvent(attributes, ev_firestore.DocumentEventData.serialize(data))


def pubsub_cloud_event(project: str, topic: str, received) -> CloudEvent:
    """Eventarc's envelope of a Pub/Sub message (``received`` as pulled from a subscription)."""
    message = received.message
    published = _rfc3339(message.publish_time)
    data = {
        "message": {
            "data": base64.b64encode(message.data).decode(),
            "attributes": dict(message.attributes),
            "messageId": message.message_id, "message_id": message.message_id,
            "publishTime": published, "publish_time": published,
            "orderingKey": message.ordering_key,
        },
        "subscription": f"projects/{project}/subscriptions/eventarc-nam5-trigger-{uuid.uuid4().hex[:6]}",
    }
    attributes = {
        "specversion": "1.0",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
        "id": message.message_id,
        "time": published,
        "datacontenttype": "application/json",
    }
    return CloudEvent(attributes, data)


def scheduler_call(fn, job: str):
    """POST the function as Cloud Scheduler does; the Flask response it returns."""
    import flask

    app = flask.Flask("scheduler")
    headers = {"X-CloudScheduler-JobName": f"firebase-schedule-{job}-us-central1",
               "X-CloudScheduler-ScheduleTime": _rfc3339(datetime.now(UTC))}
    with app.test_request_context("/", method="POST", headers=headers):
        return fn(flask.request)


# --- fixtures of the world the functions act on -----------------------------------------------


def _event(db, capacity=20):
    from boxoffice.services.events import create_event

    return create_event(db, name="Gig", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=30),
                        price=2500, currency="EUR", capacity=capacity, per_order_max=4, shard_count=2)


@pytest.fixture
def topic_tap(stack):
    """The production topology on the emulator (what the functions publish to), plus a private
    subscription on its topic to see what was published."""
    from boxoffice.messaging.topology import default_topology, ensure_topology, subscriber_client

    topo = default_topology(stack.project, emulator=True)
    ensure_topology(topo)
    subscriber = subscriber_client()
    path = f"projects/{stack.project}/subscriptions/cf-test-{uuid.uuid4().hex[:8]}"
    subscriber.create_subscription(request={"name": path, "topic": topo.topic_path(), "ack_deadline_seconds": 60})

    def pull(want: int, timeout: float = 20):
        got: list = []
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            resp = subscriber.pull(request={"subscription": path, "max_messages": 50}, timeout=10)
            got += list(resp.received_messages)
            if resp.received_messages:
                subscriber.acknowledge(request={"subscription": path,
                                                "ack_ids": [m.ack_id for m in resp.received_messages]})
        return got

    yield topo, pull
    subscriber.delete_subscription(request={"subscription": path})
    subscriber.close()


@pytest.fixture
def smtp(tmp_path, monkeypatch):
    from boxoffice.runtime.mailbox import LocalSmtpServer

    server = LocalSmtpServer(tmp_path / "mail").start()
    monkeypatch.setenv("BOXOFFICE_SMTP_HOST", server.address)
    yield server
    server.stop()


# --- the functions ------------------------------------------------------------------------------


def test_on_inventory_written_updates_the_summary_once(db, stack, main, fresh_functions):
    from boxoffice.services.purchasing import purchase_tickets
    from boxoffice.store.documents import event_ref, shard_ref

    event = _event(db)
    before = {sid: shard_ref(db, event.id, sid).get() for sid in ("s000", "s001")}
    order = purchase_tickets(db, event.id, "ann", 3, "k1").order
    (sid,) = list(order.allocations)  # 3 tickets fit on one shard of 10
    after = shard_ref(db, event.id, sid).get()
    assert event_ref(db, event.id).get().to_dict()["summary"]["sold"] == 0  # nothing ran yet

    path = f"events/{event.id}/inventory/{sid}"
    cloud_event = firestore_cloud_event(stack.project, "written", path, before[sid], after)
    main.on_inventory_written(cloud_event)

    doc = event_ref(db, event.id).get().to_dict()
    summary = doc["summary"]
    assert (summary["available"], summary["held"], summary["sold"], summary["capacity"]) == (17, 0, 3, 20)
    assert summary["as_of"] >= after.update_time
    writes = doc.get("summary_writes")
    main.on_inventory_written(cloud_event)  # a duplicate delivery changes nothing
    assert event_ref(db, event.id).get().to_dict().get("summary_writes") == writes


def test_publish_outbox_then_email_and_analytics_subscribers(db, stack, main, fresh_functions, topic_tap, smtp):
    from boxoffice.messaging.analytics import read_stats
    from boxoffice.services.purchasing import purchase_tickets
    from boxoffice.services.users import register_users
    from boxoffice.store.documents import OUTBOX

    topo, pull = topic_tap
    event = _event(db)
    register_users(db, [("ann", "ann@example.test", "Ann")])
    order = purchase_tickets(db, event.id, "ann", 2, "k1").order
    ref = db.collection(OUTBOX).document(f"{order.id}.confirmed")
    created = ref.get()
    assert created.get("published_at") is None

    main.publish_outbox(firestore_cloud_event(stack.project, "created", ref.path, None, created))
    marked = ref.get().to_dict()
    assert marked["published_at"] is not None and marked["publish_attempts"] == 1
    # the moment Pub/Sub acknowledged it (the relay's clock; the publish lag figures read it)
    assert isinstance(marked["acked_at"], datetime)
    assert abs((marked["published_at"] - marked["acked_at"]).total_seconds()) < 60
    (received,) = pull(1)
    assert received.message.attributes["message_id"] == ref.id
    assert received.message.ordering_key == event.id

    def delivery() -> CloudEvent:  # each delivery is a new request (the SDK edits the payload in place)
        return pubsub_cloud_event(stack.project, topo.topic_id(), received)

    main.email_subscriber(delivery())
    main.email_subscriber(delivery())  # Pub/Sub delivers at least once: the second is a duplicate
    mails = smtp.mailbox.items()
    assert [(m.kind, m.order_id, m.to) for m in mails] == [("order_confirmed", order.id, ["ann@example.test"])]

    main.analytics_subscriber(delivery())
    main.analytics_subscriber(delivery())
    stats = read_stats(db, event.id)
    assert (stats.orders, stats.tickets_sold, stats.revenue) == (1, 2, 5000)


def test_a_subscriber_raises_on_a_failed_message_so_pubsub_retries(db, stack, main, fresh_functions, topic_tap):
    from boxoffice.store.messaging import message_failure_ref

    garbage = CloudEvent(
        {"specversion": "1.0", "type": "google.cloud.pubsub.topic.v1.messagePublished",
         "source": f"//pubsub.googleapis.com/projects/{stack.project}/topics/ticket-events",
         "id": "m-bad", "time": _rfc3339(datetime.now(UTC)), "datacontenttype": "application/json"},
        {"message": {"data": base64.b64encode(b"not json").decode(),
                     "attributes": {"message_id": "bad-1", "type": "order.confirmed"},
                     "messageId": "m-bad", "message_id": "m-bad",
                     "publishTime": _rfc3339(datetime.now(UTC)), "publish_time": _rfc3339(datetime.now(UTC))},
         "subscription": f"projects/{stack.project}/subscriptions/eventarc-x"},
    )
    with pytest.raises(RuntimeError, match="retried by Pub/Sub"):  # raising = nack: Pub/Sub redelivers
        main.analytics_subscriber(garbage)
    failure = message_failure_ref(db, "analytics", "bad-1").get().to_dict()
    assert failure["failures"] == 1 and failure["message_id"] == "bad-1"


def test_sweep_outbox_publishes_stragglers(db, stack, main, fresh_functions, topic_tap):
    from boxoffice.services.purchasing import purchase_tickets
    from boxoffice.store.documents import OUTBOX

    _, pull = topic_tap
    event = _event(db)
    orders = [purchase_tickets(db, event.id, f"u{i}", 1, f"k{i}").order for i in range(3)]
    response = scheduler_call(main.sweep_outbox, "sweep_outbox")
    assert response.status_code == 200, response.get_data(as_text=True)
    docs = [s.to_dict() for s in db.collection(OUTBOX).stream()]
    assert len(docs) == 3 and all(d["published_at"] is not None for d in docs)
    ids = {m.message.attributes["message_id"] for m in pull(3)}
    assert ids == {f"{o.id}.confirmed" for o in orders}


def test_reconcile_inventory_releases_expired_holds_and_repairs_summaries(db, stack, main, fresh_functions):
    from boxoffice.services.holds import get_hold, hold_tickets
    from boxoffice.services.purchasing import purchase_tickets
    from boxoffice.store.documents import event_ref, inventory_col
    from boxoffice.triggers.inventory import InventoryChange, deliver, list_failures

    event = _event(db)
    expired = hold_tickets(db, event.id, "ann", 2, "h1", ttl_s=0.05)
    live = hold_tickets(db, event.id, "bob", 1, "h2")
    purchase_tickets(db, event.id, "cy", 4, "p1")
    # A change whose trigger failed for good: dead-lettered, the summary left stale.
    change = InventoryChange(event_id=event.id, shard_id="s000", before=None, after=None,
                             change_id=f"c-{uuid.uuid4().hex[:8]}", change_time=datetime.now(UTC))

    def broken(*args, **kwargs):
        raise RuntimeError("trigger down")

    deliver(db, change, handler=broken, attempts=1)
    assert len(list_failures(db)) == 1
    time.sleep(0.1)

    response = scheduler_call(main.reconcile_inventory, "reconcile_inventory")
    assert response.status_code == 200, response.get_data(as_text=True)

    assert get_hold(db, expired.id).status.value == "expired"
    assert get_hold(db, live.id).status.value == "active"
    shards = [s.to_dict() for s in inventory_col(db, event.id).stream()]
    assert (sum(s["held"] for s in shards), sum(s["sold"] for s in shards),
            sum(s["available"] for s in shards)) == (1, 4, 15)
    summary = event_ref(db, event.id).get().to_dict()["summary"]
    assert (summary["available"], summary["held"], summary["sold"]) == (15, 1, 4)
    assert list_failures(db) == []
