"""A buyer's request and its answer: ``requests/{requestId}``, written by the allocator.

The request id is the id of what the request creates (the order id for a purchase, the hold id
for a hold), derived from the user and the idempotency key, so a repeated key finds the same
document. The document does not exist while the request waits in the admission queue; the
allocator creates it with the outcome in the same atomic batch as the order (or hold), its
tickets, the buyer's record and the shard counts, so an answer is never written without its
effects, nor effects without their answer.

    requests/{id}   kind, event_id, user_id, quantity, idempotency_key, pool, attempt,
                    instance (the app instance waiting), message_id (the delivery answered),
                    arrived_at (the queue's server-side receive time), answered_at,
                    outcome ("order" | "hold" | "refused"), order_id | hold_id,
                    error {code, message, details}, batch, epoch

A buyer waits for its answer with ``AnswerBoard``: one reader per process for all its waiting
calls, by default one ``get_all`` of the awaited answer documents every 0.1 s (a listener per
process is the other mode; see the class for why polling is the default).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain.allocation import DEFAULT_POOL, Decision, Grant, RequestKind, TicketRequest
from boxoffice.domain.errors import BoxofficeError, error_from_answer
from boxoffice.log import kv

log = logging.getLogger(__name__)

REQUESTS = "requests"

ORDER, HOLD, REFUSED = "order", "hold", "refused"


def request_ref(db: firestore.Client, request_id: str) -> firestore.DocumentReference:
    return db.collection(REQUESTS).document(request_id)


@dataclass(frozen=True)
class Answer:
    """The allocator's answer to one request, as stored."""

    request_id: str
    kind: RequestKind
    event_id: str
    user_id: str
    quantity: int
    attempt: int
    outcome: str  # ORDER | HOLD | REFUSED
    message_id: str = ""
    order_id: str | None = None
    hold_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_details: dict[str, Any] | None = None
    arrived_at: datetime | None = None
    answered_at: datetime | None = None

    @property
    def granted(self) -> bool:
        return self.outcome != REFUSED

    def error(self) -> BoxofficeError:
        return error_from_answer(self.error_code or "boxoffice_error", self.error_message or "refused",
                                 self.error_details or {})

    def same_request(self, request: TicketRequest) -> bool:
        return (self.kind, self.event_id, self.user_id, self.quantity) == (
            request.kind, request.event_id, request.user_id, request.quantity)


def answer_from_doc(request_id: str, doc: dict[str, Any]) -> Answer:
    error = doc.get("error") or {}
    return Answer(
        request_id=request_id,
        kind=RequestKind(doc["kind"]),
        event_id=doc["event_id"],
        user_id=doc["user_id"],
        quantity=doc["quantity"],
        attempt=int(doc.get("attempt", 1)),
        outcome=doc["outcome"],
        message_id=doc.get("message_id", ""),
        order_id=doc.get("order_id"),
        hold_id=doc.get("hold_id"),
        error_code=error.get("code"),
        error_message=error.get("message"),
        error_details=error.get("details"),
        arrived_at=doc.get("arrived_at"),
        answered_at=doc.get("answered_at"),
    )


def answer_to_doc(decision: Decision, *, batch: str, epoch: int) -> dict[str, Any]:
    request = decision.request
    doc: dict[str, Any] = {
        "kind": request.kind.value,
        "event_id": request.event_id,
        "user_id": request.user_id,
        "quantity": request.quantity,
        "idempotency_key": request.idempotency_key,
        "pool": request.pool,
        "attempt": request.attempt,
        "instance": request.instance,
        "message_id": request.message_id,
        "arrived_at": request.arrived_at,
        "answered_at": firestore.SERVER_TIMESTAMP,
        "batch": batch,
        "epoch": epoch,
        "order_id": None,
        "hold_id": None,
        "error": None,
    }
    if isinstance(decision, Grant):
        if request.kind is RequestKind.PURCHASE:
            doc |= {"outcome": ORDER, "order_id": request.id}
        else:
            doc |= {"outcome": HOLD, "hold_id": request.id}
    else:
        exc = decision.error
        details = {k: v for k, v in vars(exc).items() if k != "message" and isinstance(v, (str, int, float, bool))}
        doc |= {"outcome": REFUSED, "error": {"code": exc.code, "message": exc.message, "details": details}}
    return doc


def stage_answer(
    db: firestore.Client, writer: Any, decision: Decision, *, batch: str, epoch: int,
    prior_update_time: datetime | None = None,
) -> None:
    """Stage the answer document, so that Firestore itself refuses a second answer: a first
    answer is a ``create`` (a commit that would answer the same request twice fails as a
    whole); a refused request asked again replaces its answer guarded by the ``update_time``
    of the refusal that was read."""
    ref = request_ref(db, decision.request.id)
    doc = answer_to_doc(decision, batch=batch, epoch=epoch)
    if prior_update_time is None:
        writer.create(ref, doc)
    else:
        writer.update(ref, doc, option=db.write_option(last_update_time=prior_update_time))


def new_instance_id() -> str:
    """A name for this app instance (process), unique across restarts."""
    return f"{socket.gethostname()[:20]}-{os.getpid()}-{secrets.token_hex(3)}"


def _answers_mode() -> str:
    mode = os.environ.get("BOXOFFICE_ANSWERS", "poll")
    if mode not in ("poll", "listen"):
        raise ValueError(f"BOXOFFICE_ANSWERS must be 'poll' or 'listen', got {mode!r}")
    return mode


class AnswerBoard:
    """Waits for answers addressed to this process: one reader thread, many waiting calls.

    Two ways to learn of answers (``BOXOFFICE_ANSWERS``):

    - ``poll`` (default): one thread reads every awaited answer document of the process in one
      ``get_all`` every ``POLL_EVERY_S`` (only while calls wait). On the emulator each listener
      is evaluated inside every commit: 500-write commits took 26-86 ms with no listener,
      0.4-1.4 s with 8 and 2-4 s with 40 (docs/decisions.md), which made the allocator's
      commits slower with every app instance; polling reads cost nothing to the writers.
    - ``listen``: one Firestore listener per process on the answers addressed to it
      (``instance == this``), which production Firestore serves without slowing the writers;
      ``wait`` also reads its own document once a second, which is the truth.
    """

    POLL_S = 1.0  # listen mode: a waiting call also reads its document this often
    POLL_EVERY_S = float(os.environ.get("BOXOFFICE_ANSWER_POLL_S", "0.1"))
    GET_ALL_CHUNK = 300

    def __init__(self, db: firestore.Client, instance: str | None = None, *, mode: str | None = None) -> None:
        self.db = db
        self.instance = instance or new_instance_id()
        self.mode = mode or _answers_mode()
        self._cv = threading.Condition()
        self._answers: dict[str, Answer] = {}
        self._waiting: dict[str, int] = {}  # request id -> calls waiting for it
        self._watch: Any = None
        self._poller: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def _ensure_reading(self) -> None:
        with self._lock:
            if self.mode == "listen":
                if self._watch is None:
                    query = self.db.collection(REQUESTS).where(filter=FieldFilter("instance", "==", self.instance))
                    self._watch = query.on_snapshot(self._on_snapshot)
            elif self._poller is None or not self._poller.is_alive():
                self._poller = threading.Thread(target=self._poll, name="answer-board", daemon=True)
                self._poller.start()

    def _on_snapshot(self, docs: Any, changes: Any, read_time: Any) -> None:
        with self._cv:
            for change in changes:
                doc = change.document
                data = doc.to_dict()
                if data and "outcome" in data:
                    self._answers[doc.id] = answer_from_doc(doc.id, data)
            self._cv.notify_all()

    def _poll(self) -> None:
        """Poll mode: read every awaited answer, in chunks of one ``get_all`` each."""
        while True:
            with self._cv:
                while not self._waiting and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                ids = [i for i in self._waiting if i not in self._answers]
            try:
                for start in range(0, len(ids), self.GET_ALL_CHUNK):
                    refs = [request_ref(self.db, i) for i in ids[start:start + self.GET_ALL_CHUNK]]
                    found = {}
                    for snap in self.db.get_all(refs):
                        data = snap.to_dict() if snap.exists else None
                        if data and "outcome" in data:
                            found[snap.id] = answer_from_doc(snap.id, data)
                    if found:
                        with self._cv:
                            self._answers.update((i, a) for i, a in found.items() if i in self._waiting)
                            self._cv.notify_all()
            except Exception as exc:  # noqa: BLE001 - a failed read is retried on the next turn
                kv(log, logging.WARNING, "answers.poll_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            time.sleep(self.POLL_EVERY_S)

    def wait(self, request_id: str, attempt: int, timeout_s: float) -> Answer | None:
        """The answer to ``request_id`` of at least ``attempt``, or None after ``timeout_s``."""
        with self._cv:
            self._waiting[request_id] = self._waiting.get(request_id, 0) + 1
            self._cv.notify_all()
        try:
            self._ensure_reading()
            return self._wait(request_id, attempt, timeout_s)
        finally:
            with self._cv:
                left = self._waiting.get(request_id, 1) - 1
                if left <= 0:
                    self._waiting.pop(request_id, None)
                    if self.mode == "poll":
                        self._answers.pop(request_id, None)
                else:
                    self._waiting[request_id] = left

    def _wait(self, request_id: str, attempt: int, timeout_s: float) -> Answer | None:
        if self.mode == "listen":
            return self._wait_listening(request_id, attempt, timeout_s)
        return self._wait_polled(request_id, attempt, timeout_s)

    def _wait_polled(self, request_id: str, attempt: int, timeout_s: float) -> Answer | None:
        """Poll mode: the reader thread (``_poll``) files the answer; wait until it does."""
        give_up = time.monotonic() + timeout_s
        with self._cv:
            while True:
                # An older attempt's answer is dropped, so that the reader reads the document again.
                found = self._take(request_id, attempt, drop_older=True)
                if found is not None:
                    return found
                now = time.monotonic()
                if now >= give_up:
                    return None
                self._cv.wait(give_up - now)

    def _wait_listening(self, request_id: str, attempt: int, timeout_s: float) -> Answer | None:
        """Listen mode: the listener files the answer; the document itself is also read every
        ``POLL_S``, which is the truth should the listener lag or miss it."""
        give_up = time.monotonic() + timeout_s
        next_read = time.monotonic() + self.POLL_S
        while True:
            with self._cv:
                found = self._take(request_id, attempt, drop_older=False)
                if found is not None:
                    return found
                now = time.monotonic()
                if now >= give_up:
                    return None
                self._cv.wait(min(give_up, next_read) - now)
            if time.monotonic() >= next_read:
                next_read = time.monotonic() + self.POLL_S
                snap = request_ref(self.db, request_id).get()
                if snap.exists:
                    answer = answer_from_doc(request_id, snap.to_dict() or {})
                    if answer.attempt >= attempt:
                        return answer

    def _take(self, request_id: str, attempt: int, *, drop_older: bool) -> Answer | None:
        """The filed answer of at least ``attempt`` (kept for other calls waiting on the same id).
        Call with ``_cv`` held."""
        found = self._answers.get(request_id)
        if found is not None and found.attempt >= attempt:
            if self._waiting.get(request_id, 0) <= 1:
                self._answers.pop(request_id, None)
            return found
        if found is not None and drop_older:
            self._answers.pop(request_id, None)
        return None

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        with self._lock:
            if self._watch is not None:
                try:
                    self._watch.unsubscribe()
                except Exception as exc:  # noqa: BLE001 - closing must not fail the caller
                    kv(log, logging.DEBUG, "answers.unsubscribe_failed", error=str(exc))
                self._watch = None


_BOARDS: dict[int, AnswerBoard] = {}
_BOARDS_LOCK = threading.Lock()


def answer_board(db: firestore.Client) -> AnswerBoard:
    """This process's board for a client (one listener per client, made on first use)."""
    with _BOARDS_LOCK:
        board = _BOARDS.get(id(db))
        if board is None or board.db is not db:
            board = _BOARDS[id(db)] = AnswerBoard(db)
        return board


__all__ = [
    "DEFAULT_POOL",
    "HOLD",
    "ORDER",
    "REFUSED",
    "Answer",
    "AnswerBoard",
    "answer_board",
    "request_ref",
    "stage_answer",
]
