"""Repair from the source of truth (messaging/repair.py) on the Firestore emulator: published
outbox messages whose effects are missing are marked for the relay again, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.cloud import firestore

from boxoffice.messaging.repair import repair
from boxoffice.messaging.topology import default_topology
from boxoffice.services.cancellations import cancel_order
from boxoffice.services.events import create_event
from boxoffice.services.purchasing import purchase_tickets
from boxoffice.store.documents import outbox_ref
from boxoffice.store.messaging import message_failure_ref, processed_ref, repair_state_ref


def _handled(db, subscription, message_id):
    processed_ref(db, subscription, message_id).set({"subscription": subscription, "message_id": message_id})


def test_repair_resends_only_published_messages_a_subscription_never_handled(db):
    topology = default_topology("demo-boxoffice")
    event = create_event(db, name="Gig", venue="Hall", starts_at=datetime.now(UTC) + timedelta(days=30),
                         price=2500, currency="EUR", capacity=10, per_order_max=2)
    orders = [purchase_tickets(db, event.id, f"u{i}", 1, f"k{i}").order for i in range(4)]
    cancel_order(db, orders[3].id, "u3")
    ids = [f"{o.id}.confirmed" for o in orders]
    cancelled = [s.id for s in db.collection("outbox").stream() if s.id.endswith(".cancelled")]
    for mid in ids + cancelled:
        outbox_ref(db, mid).update({"published_at": firestore.SERVER_TIMESTAMP})
    # order 0: fully handled; order 1: email lost; order 2: both lost, but analytics gave up on
    # it (dead-lettered: the operator's business); order 3 and its cancellation: all lost.
    _handled(db, "email", ids[0])
    _handled(db, "analytics", ids[0])
    _handled(db, "analytics", ids[1])
    message_failure_ref(db, "analytics", ids[2]).set({"dead_lettered": True})
    unpublished_later = purchase_tickets(db, event.id, "u9", 1, "k9").order  # the relay's business

    later = datetime.now(UTC) + timedelta(seconds=120)  # past the grace period
    dry = repair(db, topology, now=later, dry_run=True)
    assert sorted(dry.republished) == sorted([ids[1], ids[2], ids[3], *cancelled])
    assert outbox_ref(db, ids[1]).get().get("published_at") is not None  # dry run: nothing changed

    result = repair(db, topology, now=later)
    assert result.checked == 6 and result.in_flight == 1  # the unpublished one
    assert result.missing == {"email": 4, "analytics": 2}
    docs = {mid: outbox_ref(db, mid).get().to_dict() for mid in ids + cancelled}
    assert [mid for mid, d in docs.items() if d["published_at"] is None] == [ids[1], ids[2], ids[3], *cancelled]
    assert docs[ids[1]]["repaired_for"] == ["email"] and docs[ids[1]]["republished"] == 1
    assert docs[ids[2]]["repaired_for"] == ["email"]
    assert docs[ids[3]]["repaired_for"] == ["email", "analytics"]
    # The watermark stops at the oldest message not settled, so the next run re-reads from there.
    state = repair_state_ref(db).get().to_dict()
    assert state["watermark"] == docs[ids[1]]["created_at"]
    assert outbox_ref(db, f"{unpublished_later.id}.confirmed").get().get("published_at") is None

    again = repair(db, topology, now=later)  # the marked ones are in flight now: not marked twice
    assert again.republished == [] and again.in_flight == 5
    assert outbox_ref(db, ids[1]).get().get("republished") == 1
