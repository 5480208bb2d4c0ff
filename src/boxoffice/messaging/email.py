"""Emails from the pipeline: order confirmation, cancellation, waitlist offer.

Guarantee (SMTP is not transactional, so this is the strongest one on offer): every handled
message leads to at least one SMTP hand-off, and normally exactly one. The email record
``emails/{messageId}`` is claimed first (``create``: only one delivery can claim it), the mail
is sent, then the record is marked ``sent`` in the same commit as the processed-message record.
A redelivered message finds ``sent`` and does nothing. A crash (or an SMTP timeout after the
server accepted) between send and mark leaves ``sending``; once the claim is older than
``CLAIM_LEASE_S`` the next delivery sends again, with the SAME deterministic Message-ID
(``<messageId@boxoffice>``), so mail clients and the audit dedupe it: exactly one distinct
email per message. A claim younger than the lease means another delivery is sending right now:
the message is nacked and comes back later.

A user without an email address: the record is marked ``skipped`` (reason ``no_email``) and
the message acked (see services/users.py).

Order of emails: the email subscription is unordered and handled in parallel (a flash sale's
confirmations would otherwise go out one after another: per-event ordering serialises a whole
event). The only order a buyer can notice is per ORDER: a cancellation email must not arrive
before the confirmation of the same order. So a cancellation whose order's confirmation email is
not yet ``sent`` (or ``skipped``) is deferred (``RetryLater``: nacked, redelivered after the
retry backoff, never dead-lettered for it) until it is, or until ``CAUSALITY_WAIT_S`` after the
cancellation's commit: then it is sent anyway (the confirmation is stuck, e.g. dead-lettered, and
the buyer must still hear about the refund; logged as ``email.causality_timeout``).
"""

from __future__ import annotations

import logging
import os
import queue
import smtplib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.header import Header
from email.mime.nonmultipart import MIMENonMultipart
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from boxoffice.log import kv
from boxoffice.messaging.subscribers import RetryLater
from boxoffice.messaging.topology import EMAIL, EMAIL_TYPES
from boxoffice.messaging.wire import Delivered
from boxoffice.services.users import User, get_user, get_users
from boxoffice.store.encoded_batch import EncodedWriteBatch
from boxoffice.store.messaging import email_ref, processed_ref

log = logging.getLogger(__name__)

# How long a claim protects an email being sent; past it, another delivery takes it over (the
# sender crashed). An environment setting so that crash tests need not wait a minute.
CLAIM_LEASE_S = float(os.environ.get("BOXOFFICE_EMAIL_LEASE_S", "60"))
CAUSALITY_WAIT_S = 300.0
SUBSCRIPTION = EMAIL

# The email kind of each message type the email subscription receives: "order.confirmed" -> "order_confirmed".
KINDS = {t: t.replace(".", "_") for t in EMAIL_TYPES}


class EmailInFlight(RetryLater):
    """Another delivery of this message claimed the email moments ago: retry later (the claim's
    lease bounds the wait)."""


class ConfirmationNotSentYet(RetryLater):
    """A cancellation email waits for the confirmation email of its order."""


def confirmation_message_id(order_id: str) -> str:
    """The outbox id of an order's confirmation (domain.messages.order_confirmed)."""
    return f"{order_id}.confirmed"


def _confirmation_done(db: firestore.Client, order_id: str) -> bool:
    doc = email_ref(db, confirmation_message_id(order_id)).get().to_dict() or {}
    return doc.get("status") in ("sent", "skipped")


def _wait_for_confirmation(db: firestore.Client, d: Delivered) -> None:
    """Raise ConfirmationNotSentYet while the order's confirmation email is not out, unless the
    cancellation is older than CAUSALITY_WAIT_S (then: send anyway, logged)."""
    order_id = str(d.payload.get("order_id") or "")
    if not order_id or _confirmation_done(db, order_id):
        return
    age = (datetime.now(UTC) - d.created_at).total_seconds() if d.created_at else CAUSALITY_WAIT_S
    if age < CAUSALITY_WAIT_S:
        raise ConfirmationNotSentYet(f"order {order_id}: confirmation email not sent yet")
    kv(log, logging.WARNING, "email.causality_timeout", message_id=d.message_id, order_id=order_id,
       waited_s=round(age, 1))


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str = "boxoffice <tickets@boxoffice.local>"
    timeout_s: float = 10.0
    username: str | None = None
    password: str | None = None
    starttls: bool = False

    @classmethod
    def from_address(cls, address: str, **kw: Any) -> SmtpSettings:
        host, _, port = address.rpartition(":")
        return cls(host=host or "127.0.0.1", port=int(port), **kw)

    @classmethod
    def from_env(cls, default_address: str | None = None) -> SmtpSettings:
        """BOXOFFICE_SMTP_HOST (host:port), BOXOFFICE_SMTP_USER / _PASSWORD, BOXOFFICE_SMTP_STARTTLS=1,
        BOXOFFICE_MAIL_FROM; else ``default_address`` (the dev stack's server)."""
        address = os.environ.get("BOXOFFICE_SMTP_HOST") or default_address
        if not address:
            raise RuntimeError("no SMTP server: set BOXOFFICE_SMTP_HOST=host:port or run `boxoffice dev up`")
        return cls.from_address(
            address,
            sender=os.environ.get("BOXOFFICE_MAIL_FROM", cls.sender),
            username=os.environ.get("BOXOFFICE_SMTP_USER") or None,
            password=os.environ.get("BOXOFFICE_SMTP_PASSWORD") or None,
            starttls=os.environ.get("BOXOFFICE_SMTP_STARTTLS") == "1",
        )


class Mailer:
    """Sends over SMTP on a pool of at most ``connections`` kept-open connections, each used by
    one sender at a time (smtplib connections are not thread-safe); a dropped connection is
    replaced once per send."""

    def __init__(self, settings: SmtpSettings, connections: int = 8) -> None:
        self.settings = settings
        self.connections = connections
        self._idle: queue.LifoQueue[smtplib.SMTP] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(connections)
        self._lock = threading.Lock()
        self.sent = 0

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        if s.starttls:
            conn.starttls()
        if s.username:
            conn.login(s.username, s.password or "")
        return conn

    def send(self, msg: MIMENonMultipart) -> None:
        with self._slots:
            try:
                conn: smtplib.SMTP | None = self._idle.get_nowait()
            except queue.Empty:
                conn = None
            for attempt in (1, 2):
                if conn is None:
                    conn = self._connect()
                try:
                    conn.send_message(msg)
                except (smtplib.SMTPServerDisconnected, ConnectionError, OSError):
                    conn = None  # stale kept-open connection: once more on a new one
                    if attempt == 2:
                        raise
                    continue
                except Exception:
                    _quit(conn)  # the connection's state is unknown after an error: not reused
                    raise
                self._idle.put(conn)
                with self._lock:
                    self.sent += 1
                return

    def probe(self) -> None:
        """Raises unless the SMTP server accepts a connection and answers NOOP."""
        conn = self._connect()
        try:
            conn.noop()
        finally:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                pass

    def close(self) -> None:
        while True:
            try:
                _quit(self._idle.get_nowait())
            except queue.Empty:
                return


def _quit(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (smtplib.SMTPException, OSError):
        pass


def message_id_header(message_id: str) -> str:
    return f"<{message_id}@boxoffice>"


def _money(amount: Any, currency: Any) -> str:
    try:
        return f"{int(amount) / 100:.2f} {currency or ''}".strip()
    except (TypeError, ValueError):
        return "?"


# Text bodies in UTF-8, quoted-printable (readable in the .eml files of the local mailbox).
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


def compose(kind: str, d: Delivered, to: str, name: str | None, sender: str) -> MIMENonMultipart:
    """The email for a message. Headers X-Boxoffice-* let the mailbox and the audit match
    emails to orders without parsing the text.

    Built with the standard library's legacy ``email.mime`` API (policy ``compat32``): its
    headers are stored as given, where ``EmailMessage`` parses every header it is handed
    (measured: 22 against 555 us a message, 44% of the email subscriber's CPU in a backlog
    profile). A non-ASCII header value is RFC 2047-encoded."""
    p = d.payload
    event = d.event_id or p.get("event_id", "")
    order = str(p.get("order_id", ""))
    hello = f"Hello {name}," if name else "Hello,"
    if kind == "order_confirmed":
        subject = f"Your tickets for {event}: order {order}"
        tickets = "\n".join(f"  - {t}" for t in p.get("ticket_ids", []))
        body = (f"{hello}\n\nyour order {order} is confirmed: {p.get('quantity')} ticket(s), "
                f"{_money(p.get('amount'), p.get('currency'))}.\n\nTickets:\n{tickets}\n")
    elif kind == "order_cancelled":
        subject = f"Order {order} cancelled"
        body = (f"{hello}\n\n{p.get('quantity', '')} ticket(s) of order {order} for {event} were cancelled; "
                f"refund: {_money(p.get('amount'), p.get('currency'))}.\n")
    else:
        subject = f"Tickets are available for {event}"
        extra = f" Hold {p['hold_id']} keeps them until {p.get('expires_at')}." if p.get("hold_id") else ""
        body = f"{hello}\n\n{p.get('quantity', '')} ticket(s) for {event} are waiting for you.{extra}\n"
    msg = MIMENonMultipart("text", "plain")
    msg.set_payload(body, _UTF8_QP)  # sets the charset and Content-Transfer-Encoding, encodes the body
    for name_, value in (("From", sender), ("To", to), ("Subject", subject),
                         ("Message-ID", message_id_header(d.message_id)), ("X-Boxoffice-Kind", kind),
                         ("X-Boxoffice-Event", event), ("X-Boxoffice-Order", order),
                         ("X-Boxoffice-Message", d.message_id)):
        msg[name_] = value if value.isascii() else Header(value, "utf-8")  # type: ignore[assignment]
    return msg


def _claim(db: firestore.Client, d: Delivered, kind: str) -> bool:
    """Claim the email of this message. False: it was already sent or skipped."""
    ref = email_ref(db, d.message_id)
    fields = {
        "status": "sending",
        "claimed_at": firestore.SERVER_TIMESTAMP,
        "claimed_at_local": datetime.now(UTC),
    }
    try:
        ref.create({
            **fields,
            "message_id": d.message_id,
            "kind": kind,
            "event_id": d.event_id,
            "order_id": d.payload.get("order_id"),
            "user_id": d.payload.get("user_id"),
            "committed_at": d.created_at,
            "attempts": 1,
        })
        return True
    except gexc.AlreadyExists:
        pass
    snap = ref.get()
    doc = snap.to_dict() or {}
    status = doc.get("status")
    if status in ("sent", "skipped"):
        return False
    claimed = doc.get("claimed_at_local")
    age = (datetime.now(UTC) - claimed).total_seconds() if claimed else CLAIM_LEASE_S
    if status == "sending" and age < CLAIM_LEASE_S:
        raise EmailInFlight(d.message_id)
    # "failed", or "sending" past its lease (the sender crashed): take the claim over, unless
    # another delivery took it since we read it (precondition fails -> nack, retried later).
    ref.update({**fields, "attempts": firestore.Increment(1)},
               option=db.write_option(last_update_time=snap.update_time))
    return True


def _finish(db: firestore.Client, d: Delivered, status: str, **extra: Any) -> None:
    batch = EncodedWriteBatch(db)
    batch.update(email_ref(db, d.message_id), {"status": status, "sent_at": firestore.SERVER_TIMESTAMP,
                                               "sent_at_local": datetime.now(UTC), **extra})
    batch.set(processed_ref(db, SUBSCRIPTION, d.message_id), {
        "subscription": SUBSCRIPTION, "message_id": d.message_id, "type": d.type, "event_id": d.event_id,
        "processed_at": firestore.SERVER_TIMESTAMP, "outcome": status,
    })
    batch.commit()


def handle_email(db: firestore.Client, mailer: Mailer, d: Delivered) -> str:
    """Send the email a message calls for, once. Returns "sent", "skipped", "duplicate" or
    "ignored" (a type that needs no email). Raises ``RetryLater`` to wait (in flight elsewhere,
    or a cancellation before its confirmation email), anything else to have it retried."""
    kind = KINDS.get(d.type)
    if kind is None:
        return "ignored"
    if kind == "order_cancelled":
        _wait_for_confirmation(db, d)  # before the claim: a deferred message leaves no trace
    if not _claim(db, d, kind):
        return "duplicate"
    user_id = str(d.payload.get("user_id") or "")
    user = get_user(db, user_id) if user_id else None
    if user is None or not user.email:
        _finish(db, d, "skipped", reason="no_email")
        kv(log, logging.INFO, "email.skipped", message_id=d.message_id, user_id=user_id, reason="no_email")
        return "skipped"
    msg = compose(kind, d, user.email, user.name, mailer.settings.sender)
    try:
        mailer.send(msg)
    except Exception as exc:
        # Release the claim so the retry (nack -> redelivery with backoff) can send at once.
        try:
            email_ref(db, d.message_id).update({"status": "failed", "last_error": repr(exc)[:500]})
        except Exception:  # noqa: BLE001 - the lease covers this case too
            pass
        raise
    _finish(db, d, "sent", to=user.email, message_id_header=msg["Message-ID"])
    kv(log, logging.DEBUG, "email.sent", message_id=d.message_id, kind=kind, to=user.email)
    return "sent"


# --- batches ---------------------------------------------------------------------------------

Outcomes = dict[str, "str | BaseException"]
MARK_CHUNK = 100  # messages per marking commit (two writes each), marked as their sends complete


def _age_s(d: Delivered) -> float:
    return (datetime.now(UTC) - d.created_at).total_seconds() if d.created_at else CAUSALITY_WAIT_S


def _claim_fields(d: Delivered, kind: str) -> dict[str, Any]:
    return {"status": "sending", "claimed_at": firestore.SERVER_TIMESTAMP, "claimed_at_local": datetime.now(UTC),
            "message_id": d.message_id, "kind": kind, "event_id": d.event_id, "order_id": d.payload.get("order_id"),
            "user_id": d.payload.get("user_id"), "committed_at": d.created_at, "attempts": 1}


def _claim_batch(db: firestore.Client, messages: list[Delivered], records: dict[str, Any], out: Outcomes) -> list[Delivered]:
    """Claim the emails of ``messages``. Returns the ones claimed; the others get their outcome
    in ``out`` (duplicate, in flight, or an error).

    ``records``: snapshots of email records read before, if any. A message with no snapshot is
    claimed blind, in one batch of ``create``s: the usual case, a first delivery, costs no read.
    If one of them exists after all (a redelivery), the batch fails as a whole, applying
    nothing; their records are read then and each is decided on what it holds."""
    claimed: list[Delivered] = []
    unread = [d for d in messages if d.message_id not in records]
    if unread:
        if _create_claims(db, unread, out):
            claimed = list(unread)
            messages = [d for d in messages if d.message_id in records]
        elif not any(d.message_id in out for d in unread):  # one exists: read them, decide below
            records = records | {snap.id: snap for snap in db.get_all([email_ref(db, d.message_id) for d in unread])}
    new: list[Delivered] = []
    for d in messages:
        if d.message_id in out:
            continue  # the blind batch failed for another reason: its error is the outcome
        snap = records.get(d.message_id)
        if snap is None or not snap.exists:
            new.append(d)
            continue
        doc = snap.to_dict() or {}
        if doc.get("status") in ("sent", "skipped"):
            out[d.message_id] = "duplicate"
            continue
        _claim_one(db, d, claimed, out)  # in flight elsewhere (young claim), or taken over (failed / lease expired)
    if new and not _create_claims(db, new, out):
        for d in new:  # claimed meanwhile by another worker: one by one
            if d.message_id not in out:
                _claim_one(db, d, claimed, out)
    elif new:
        claimed.extend(new)
    return claimed


def _claim_one(db: firestore.Client, d: Delivered, claimed: list[Delivered], out: Outcomes) -> None:
    """``_claim`` one message: appended to ``claimed``, or its outcome in ``out`` ("duplicate",
    ``RetryLater`` while another delivery sends it, or a Firestore error)."""
    try:
        if _claim(db, d, KINDS[d.type]):
            claimed.append(d)
        else:
            out[d.message_id] = "duplicate"
    except Exception as exc:  # noqa: BLE001 - per message: retried (nack)
        out[d.message_id] = exc


def _create_claims(db: firestore.Client, messages: list[Delivered], out: Outcomes) -> bool:
    """One commit creating the claims of ``messages``. False if one exists already (nothing
    applied). Any other error is every message's outcome (retried), and False."""
    batch = EncodedWriteBatch(db)
    for d in messages:
        batch.create(email_ref(db, d.message_id), _claim_fields(d, KINDS[d.type]))
    try:
        batch.commit()
        return True
    except gexc.AlreadyExists:
        return False
    except Exception as exc:  # noqa: BLE001 - none claimed: every one is retried
        out.update({d.message_id: exc for d in messages})
        return False


def _mark(db: firestore.Client, done: list[tuple[Delivered, str, dict[str, Any]]], out: Outcomes) -> None:
    """Write sent/skipped with the processed records, in batched commits."""
    for i in range(0, len(done), MARK_CHUNK):
        chunk = done[i:i + MARK_CHUNK]
        batch = EncodedWriteBatch(db)
        for d, status, extra in chunk:
            batch.update(email_ref(db, d.message_id), {"status": status, "sent_at": firestore.SERVER_TIMESTAMP,
                                                       "sent_at_local": datetime.now(UTC), **extra})
            batch.set(processed_ref(db, SUBSCRIPTION, d.message_id), {
                "subscription": SUBSCRIPTION, "message_id": d.message_id, "type": d.type, "event_id": d.event_id,
                "processed_at": firestore.SERVER_TIMESTAMP, "outcome": status,
            })
        try:
            batch.commit()
            out.update({d.message_id: status for d, status, _ in chunk})
        except Exception as exc:  # noqa: BLE001 - left "sending": the lease resends (same Message-ID)
            out.update({d.message_id: exc for d, _, _ in chunk})


def _send_claimed(db: firestore.Client, mailer: Mailer, claimed: list[Delivered], out: Outcomes,
                  run: Callable[..., Any]) -> None:
    users = get_users(db, (str(d.payload.get("user_id") or "") for d in claimed))
    done: list[tuple[Delivered, str, dict[str, Any]]] = []
    to_send: list[tuple[Delivered, User, MIMENonMultipart]] = []
    for d in claimed:
        user = users.get(str(d.payload.get("user_id") or ""))
        if user is None or not user.email:
            done.append((d, "skipped", {"reason": "no_email"}))
            kv(log, logging.INFO, "email.skipped", message_id=d.message_id, user_id=d.payload.get("user_id"),
               reason="no_email")
        else:
            to_send.append((d, user, compose(KINDS[d.type], d, user.email, user.name, mailer.settings.sender)))

    def send(item: tuple[Delivered, User, MIMENonMultipart]) -> BaseException | None:
        try:
            mailer.send(item[2])
            return None
        except Exception as exc:  # noqa: BLE001 - reported per message
            return exc

    failed = EncodedWriteBatch(db)
    n_failed = 0
    for (d, user, msg), error in zip(to_send, run(send, to_send), strict=False):
        if len(done) >= MARK_CHUNK:
            # Marked as the sends complete (``run`` yields in order while later sends go on), so
            # the first emails of a large batch are not left "sending" until its last one is out.
            _mark(db, done, out)
            done = []
        if error is None:
            done.append((d, "sent", {"to": user.email, "message_id_header": msg["Message-ID"]}))
        else:
            # Release the claim so the retry (nack -> redelivery with backoff) can send at once.
            failed.update(email_ref(db, d.message_id), {"status": "failed", "last_error": repr(error)[:500]})
            n_failed += 1
            out[d.message_id] = error
    if n_failed:
        try:
            failed.commit()
        except Exception:  # noqa: BLE001 - the lease covers this case too
            pass
    _mark(db, done, out)


def handle_email_batch(db: firestore.Client, mailer: Mailer, messages: list[Delivered], *,
                       run: Callable[..., Any] = map) -> Outcomes:
    """Send the emails a batch of distinct messages calls for, each once (see the module
    docstring). Per message id: "sent", "skipped", "duplicate", "ignored", or the exception
    (``RetryLater`` to wait, anything else to retry). ``run(fn, items)`` maps the SMTP sends
    (an executor's ``map`` sends them in parallel)."""
    out: Outcomes = {d.message_id: "ignored" for d in messages if d.type not in KINDS}
    todo = [d for d in messages if d.type in KINDS]
    if not todo:
        return out
    waits = {d.message_id: confirmation_message_id(str(d.payload["order_id"])) for d in todo
             if d.type == "order.cancelled" and d.payload.get("order_id")}
    # Read up front: only the confirmations the cancellations wait for (a first delivery's own
    # record does not exist yet; its claim is created blind, see _claim_batch).
    in_batch = {d.message_id for d in todo}
    outside = sorted(set(waits.values()) - in_batch)
    records = {snap.id: snap for snap in db.get_all([email_ref(db, i) for i in outside])} if outside else {}

    def confirmation_done(conf_id: str) -> bool:
        if out.get(conf_id) in ("sent", "skipped", "duplicate"):
            return True
        snap = records.get(conf_id)
        return snap is not None and snap.exists and (snap.to_dict() or {}).get("status") in ("sent", "skipped")

    first = [d for d in todo if waits.get(d.message_id) not in in_batch]
    after = [d for d in todo if waits.get(d.message_id) in in_batch]  # their confirmation goes first
    for phase in (first, after):
        ready = []
        for d in phase:
            conf = waits.get(d.message_id)
            if conf and not confirmation_done(conf):
                age = _age_s(d)
                if age < CAUSALITY_WAIT_S:
                    out[d.message_id] = ConfirmationNotSentYet(f"order {d.payload.get('order_id')}: "
                                                               "confirmation email not sent yet")
                    continue
                kv(log, logging.WARNING, "email.causality_timeout", message_id=d.message_id,
                   order_id=d.payload.get("order_id"), waited_s=round(age, 1))
            ready.append(d)
        claimed = _claim_batch(db, ready, records, out)
        if claimed:
            _send_claimed(db, mailer, claimed, out, run)
    return out
