"""Pure parts of the messaging pipeline: wire format, email composition, topology names, mailbox."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from boxoffice.messaging import email, wire
from boxoffice.messaging.topology import default_topology
from boxoffice.runtime.mailbox import Mailbox


def test_an_outbox_document_round_trips_through_the_wire_format():
    created = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    data, attrs = wire.encode("o_1.confirmed", {"type": "order.confirmed", "event_id": "ev1", "created_at": created,
                                                 "payload": {"order_id": "o_1", "quantity": 2}})
    d = wire.decode(data, attrs, delivery_attempt=3)
    assert (d.message_id, d.type, d.event_id, d.payload, d.created_at, d.delivery_attempt) == (
        "o_1.confirmed", "order.confirmed", "ev1", {"order_id": "o_1", "quantity": 2}, created, 3)


@pytest.mark.parametrize("data,attrs", [(b"{}", {}), (b"not json", {"message_id": "m"}), (b"[1]", {"message_id": "m"})])
def test_an_unreadable_message_is_a_named_error(data, attrs):
    with pytest.raises(wire.UndecodableMessage):
        wire.decode(data, attrs)


def test_an_email_carries_a_deterministic_message_id_and_matching_headers():
    d = wire.Delivered("o_1.confirmed", "order.confirmed", "ev1",
                       {"order_id": "o_1", "quantity": 2, "amount": 5000, "currency": "EUR", "ticket_ids": ["o_1-t01"]})
    a = email.compose("order_confirmed", d, "a@x.test", "A", "from@x.test")
    b = email.compose("order_confirmed", d, "a@x.test", "A", "from@x.test")
    assert a["Message-ID"] == b["Message-ID"] == "<o_1.confirmed@boxoffice>"
    assert (a["X-Boxoffice-Order"], a["X-Boxoffice-Kind"], a["X-Boxoffice-Event"]) == ("o_1", "order_confirmed", "ev1")
    assert "50.00 EUR" in a.get_payload(decode=True).decode()


def test_an_email_with_non_ascii_text_goes_out_as_ascii_and_reads_back_the_same():
    from email import message_from_bytes, policy

    d = wire.Delivered("o_2.cancelled", "order.cancelled", "év-1",
                       {"order_id": "o_2", "quantity": 1, "amount": 4500, "currency": "EUR"})
    raw = email.compose("order_cancelled", d, "z@x.test", "Zoë Ångström", "from@x.test").as_bytes()
    assert raw.isascii()  # quoted-printable body, RFC 2047 headers
    back = message_from_bytes(raw, policy=policy.default)
    assert back["X-Boxoffice-Event"] == "év-1" and back["Message-ID"] == "<o_2.cancelled@boxoffice>"
    assert back["Subject"] == "Order o_2 cancelled"
    assert "Hello Zoë Ångström," in back.get_content() and "45.00 EUR" in back.get_content()


def test_a_test_topology_has_its_own_names_and_emails_are_unordered_with_a_lenient_native_backstop():
    topo = default_topology("p", suffix=".x", emulator=True)
    assert topo.subscription_path("email") == "projects/p/subscriptions/ticket-events.email.x"
    assert topo.dead_letter_topic_path == "projects/p/topics/ticket-events.dead-letter.x"
    email = topo.spec("email")
    assert not email.ordered and email.native_dead_letter
    # deferred cancellations are redeliveries: the native limit must not count them as failures
    assert email.max_delivery_attempts == 5 and email.native_max_delivery_attempts == 100


def test_the_mailbox_counts_a_resend_once(tmp_path):
    box = Mailbox(tmp_path)
    raw = b"Message-ID: <m1@boxoffice>\r\nX-Boxoffice-Kind: order_confirmed\r\nSubject: hi\r\n\r\nbody\r\n"
    box.store(raw, "f@x", ["a@x"])
    box.store(raw, "f@x", ["a@x"])
    assert len(box.items()) == 2
    assert [i.message_id for i in box.distinct()] == ["<m1@boxoffice>"]
    assert box.duplicates() == {"<m1@boxoffice>": 2}


def test_a_deferred_message_is_nacked_without_counting_as_a_failure():
    from boxoffice.messaging.subscribers import RetryLater, Subscription, Verdict, process

    def not_yet(d):
        raise RetryLater("waits for its confirmation")

    topo = default_topology("p")
    # db=None: a failure would try to record itself in Firestore and blow up; a deferral must not
    sub = Subscription(None, topo, topo.spec("email"), not_yet, None)  # type: ignore[arg-type]
    data, attrs = wire.encode("r1.cancelled", {"type": "order.cancelled", "event_id": "ev1", "payload": {}})
    assert process(sub, data, attrs) is Verdict.NACK
    assert dict(sub.stats.outcomes) == {"deferred": 1}


def test_the_local_mailbox_indexes_an_email_by_its_headers_decoded(tmp_path):
    from boxoffice.runtime.mailbox import Mailbox

    d = wire.Delivered("o_3.confirmed", "order.confirmed", "év-3",
                       {"order_id": "o_3", "quantity": 1, "amount": 100, "currency": "EUR", "ticket_ids": ["t"]})
    raw = email.compose("order_confirmed", d, "z@x.test", "Zoë", "from@x.test").as_bytes()
    item = Mailbox(tmp_path).store(raw, "from@x.test", ["z@x.test"])
    assert (item.message_id, item.kind, item.order_id) == ("<o_3.confirmed@boxoffice>", "order_confirmed", "o_3")
    assert item.event_id == "év-3" and item.subject == "Your tickets for év-3: order o_3"
    assert item.source_message == "o_3.confirmed"
    assert Mailbox(tmp_path).items() == [item]
