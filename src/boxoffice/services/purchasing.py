"""Use case: a buyer purchases tickets.

``purchase_tickets`` is the one entry point. It validates the request before touching the
database, then makes attempts (``store.purchases``) until one commits, a domain rule says no
(``SoldOut``, ``PerUserLimitExceeded`` ...) or the deadline passes. A lost race is never shown
to the buyer: it is retried after a jittered backoff, on another shard.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from google.cloud import firestore

from boxoffice.domain.errors import ContentionTimeout, InvalidQuantity, InvalidRequest
from boxoffice.domain.model import MAX_PER_ORDER, Order, order_id_for
from boxoffice.log import kv
from boxoffice.retry import Backoff
from boxoffice.store.purchases import (
    RETRYABLE,
    ROUTER,
    CommitMode,
    PurchaseRequest,
    ShardRouter,
    attempt_guarded_batch,
    attempt_transaction,
)

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 10.0
DEFAULT_BACKOFF = Backoff(base_s=0.005, cap_s=0.25)


@dataclass(frozen=True)
class PurchaseResult:
    order: Order
    replayed: bool
    attempts: int


def make_request(event_id: str, user_id: str, quantity: int, idempotency_key: str) -> PurchaseRequest:
    """Check what can be checked without the database. Raises ``InvalidRequest``."""
    if not isinstance(event_id, str) or not event_id.strip() or "/" in event_id:
        raise InvalidRequest("event id must be a non-empty string without '/'")
    if not isinstance(user_id, str) or not user_id.strip() or "/" in user_id or len(user_id) > 128:
        raise InvalidRequest("user id must be 1-128 characters without '/'")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_PER_ORDER:
        raise InvalidQuantity(f"quantity must be a whole number between 1 and {MAX_PER_ORDER}, got {quantity!r}")
    return PurchaseRequest(
        event_id=event_id,
        user_id=user_id,
        quantity=quantity,
        idempotency_key=idempotency_key,
        order_id=order_id_for(user_id, idempotency_key),
    )


def purchase_tickets(
    db: firestore.Client,
    event_id: str,
    user_id: str,
    quantity: int,
    idempotency_key: str,
    *,
    mode: CommitMode = CommitMode.GUARDED_BATCH,
    deadline_s: float = DEFAULT_DEADLINE_S,
    backoff: Backoff = DEFAULT_BACKOFF,
    rng: random.Random | None = None,
    router: ShardRouter = ROUTER,
) -> PurchaseResult:
    """Buy ``quantity`` tickets of an event for a user, exactly once per idempotency key.

    Guarantees: the inventory update, the order, its tickets, the buyer's per-event record and
    the outbox message are committed together or not at all; no shard goes below zero; the
    buyer's total for the event never exceeds the per-user limit, even under concurrent
    requests; the same key returns the first order (``replayed=True``).

    Raises ``InvalidRequest``/``InvalidQuantity``, ``EventNotFound``, ``EventNotOnSale``,
    ``PerUserLimitExceeded``, ``SoldOut``/``NotEnoughTickets``, ``IdempotencyConflict``, or
    ``ContentionTimeout`` when no attempt could commit before ``deadline_s``.
    """
    request = make_request(event_id, user_id, quantity, idempotency_key)
    rng = rng or random.Random()
    attempt_once = attempt_guarded_batch if mode is CommitMode.GUARDED_BATCH else attempt_transaction
    give_up_at = time.monotonic() + deadline_s
    attempt = 0
    while True:
        attempt += 1
        try:
            outcome = attempt_once(db, request, rng, router, give_up_at)
        except RETRYABLE as exc:
            delay = backoff.delay(attempt, rng)
            if time.monotonic() + delay >= give_up_at:
                kv(log, logging.WARNING, "purchase.timeout", order_id=request.order_id,
                   event_id=event_id, user_id=user_id, attempts=attempt, last_error=type(exc).__name__)
                raise ContentionTimeout(
                    f"could not complete the purchase within {deadline_s:.1f}s because of load; "
                    "nothing was charged, please try again with the same idempotency key"
                ) from exc
            time.sleep(delay)
            continue
        kv(log, logging.INFO, "purchase.done", order_id=outcome.order.id, event_id=event_id,
           user_id=user_id, quantity=quantity, replayed=outcome.replayed, attempts=attempt)
        return PurchaseResult(outcome.order, outcome.replayed, attempt)
