"""One purchase attempt against Firestore: read, plan, and commit atomically.

Two ways to make the commit safe against concurrent buyers, chosen by ``CommitMode``:

``GUARDED_BATCH`` (default) - an optimistic transaction. Read the documents without locks,
then commit one batch whose every write carries a precondition: each inventory shard and the
buyer's record must still have the ``update_time`` that was read, and the order must not exist
yet. A Firestore commit is atomic, so either every write lands with every precondition holding
(nothing changed since the read) or nothing is written and the attempt is retried.

``TRANSACTION`` - a Firestore server-SDK transaction. Reads take locks (the server SDKs use
pessimistic concurrency), so a competing commit waits for the lock, and under contention on
one document buyers queue behind each other. Kept as the baseline the sharded design is
measured against.

Both write the same documents in one commit: the shard counts, the order, its tickets, the
buyer's per-event record and an outbox message.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.domain import messages
from boxoffice.domain.errors import EventNotFound, SoldOut
from boxoffice.domain.model import (
    BuyerRecord,
    Event,
    InventoryShard,
    Order,
    Ticket,
    new_ticket_code,
    plan_allocation,
    shard_id,
    ticket_ids_for,
)
from boxoffice.store.documents import (
    buyer_from_doc,
    buyer_ref,
    buyer_to_doc,
    event_from_doc,
    event_ref,
    inventory_col,
    order_from_doc,
    order_ref,
    order_to_doc,
    outbox_ref,
    outbox_to_doc,
    shard_from_doc,
    shard_ref,
    ticket_ref,
    ticket_to_doc,
)


class ShardsBusy(Exception):
    """The shards that could serve the order are all being tried by other buyers of this process."""


# Errors that mean "another writer got there first" or "try again": never shown to a buyer.
RETRYABLE = (
    gexc.Conflict,  # ABORTED (transaction lock timeout), ALREADY_EXISTS (order created meanwhile)
    gexc.FailedPrecondition,  # a guarded document changed since it was read
    gexc.NotFound,  # a document to update vanished (cannot happen for shards; kept for safety)
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    ShardsBusy,
)


class CommitMode(StrEnum):
    GUARDED_BATCH = "batch"
    TRANSACTION = "transaction"


@dataclass(frozen=True)
class PurchaseRequest:
    event_id: str
    user_id: str
    quantity: int
    idempotency_key: str
    order_id: str


@dataclass(frozen=True)
class Outcome:
    order: Order
    replayed: bool  # True when the idempotency key already had an order


@dataclass(eq=False)
class _Waiter:
    """A buyer waiting in line for a shard of an event."""

    wake: threading.Condition
    shard: str | None = None
    look_again: bool = False


class ShardRouter:
    """Routes the buyers of one process (one API instance) to inventory shards.

    It remembers which shards were last seen with tickets, so a buyer reads a likely shard
    first, and lets a buyer be told "sold out" without a query when another buyer of this
    process found every shard empty a moment ago (``SOLD_OUT_TTL_S``).

    With ``exclusive=True`` it also claims a shard for the buyer that tries it, so that two
    threads of one process never race each other for the same shard: each would read, and
    all but one would lose the commit's precondition and retry, which under a flash sale
    multiplies the reads and commits several times over. Claims are local and advisory: the
    commit's preconditions still settle every race between processes, so a stale hint or a
    missing claim costs a retry, never an oversold ticket.
    """

    SOLD_OUT_TTL_S = 0.5
    MAX_WAIT_S = 60.0  # in practice the buyer's deadline bounds the wait

    def __init__(self, *, exclusive: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.exclusive = exclusive
        self._clock = clock
        self._lock = threading.Lock()
        self._shard_count: dict[str, int] = {}
        self._with_stock: dict[str, list[str]] = {}
        self._empty_at: dict[str, float] = {}
        self._claimed: set[tuple[str, str]] = set()
        self._lines: dict[str, deque[_Waiter]] = {}

    # --- what is known of an event ---------------------------------------------------

    def learn_event(self, event: Event) -> None:
        with self._lock:
            self._shard_count[event.id] = event.shard_count

    def learn_stock(self, event_id: str, shards: Iterable[InventoryShard]) -> None:
        stocked = [s.id for s in shards if s.available > 0]
        with self._lock:
            self._with_stock[event_id] = stocked
            if stocked:
                self._empty_at.pop(event_id, None)
            else:
                self._empty_at[event_id] = self._clock()
            self._wake_all(event_id)  # waiters look again: other shards, or sold out

    def knows(self, event_id: str) -> bool:
        """Whether a query of this event's stocked shards was seen (it may have found none)."""
        with self._lock:
            return event_id in self._with_stock

    def forget(self, event_id: str, shard: str) -> None:
        """A shard was seen empty: stop sending buyers there."""
        with self._lock:
            stocked = self._with_stock.get(event_id)
            if stocked and shard in stocked:
                stocked.remove(shard)
                if not stocked:
                    # Buyers waiting for a claim must look again: with no shard left they
                    # are to re-check and hear "sold out" now, not when their wait runs out.
                    self._wake_all(event_id)

    def clear(self, event_id: str) -> None:
        """Drop what is known of an event (after a release adds tickets or shards)."""
        with self._lock:
            self._shard_count.pop(event_id, None)
            self._with_stock.pop(event_id, None)
            self._empty_at.pop(event_id, None)

    # --- claims ----------------------------------------------------------------------

    def claim_likely(
        self, event_id: str, rng: random.Random, give_up_at: float | None = None
    ) -> tuple[str, bool] | None:
        """Pick a shard likely to have tickets: ``(shard, claimed)``; or None when every shard
        was empty when last looked (the caller checks how recently) or nothing is known yet.

        When every candidate shard is claimed by other buyers of this process, waits for one
        to be released (until ``give_up_at``, at most ``MAX_WAIT_S``) rather than racing them.
        A buyer whose wait runs out races for one unclaimed (``claimed`` False): waiting in
        line bounds the work, never the answer.
        """
        with self._lock:
            give_up_at = self._give_up_at(give_up_at)
            while True:
                stocked = self._with_stock.get(event_id)
                if stocked:
                    candidates = list(stocked)
                elif stocked is not None or event_id not in self._shard_count:
                    return None
                else:
                    candidates = [shard_id(i) for i in range(self._shard_count[event_id])]
                picked = self._pick(event_id, candidates, rng, give_up_at)
                if picked is not None:
                    return picked

    def should_recheck_sold_out(self, event_id: str) -> bool:
        """After a sell-out, one buyer at a time re-checks the shards once the answer is
        ``SOLD_OUT_TTL_S`` old; the others are told "sold out" meanwhile."""
        with self._lock:
            seen = self._empty_at.get(event_id)
            if seen is None:
                # Every shard known to have stock was seen emptied: this caller confirms it
                # with a query, the buyers right behind it hear "sold out" meanwhile.
                self._empty_at[event_id] = self._clock()
                return True
            if self._clock() - seen < self.SOLD_OUT_TTL_S:
                return False
            self._empty_at[event_id] = self._clock()  # this caller re-checks; the rest wait for it
            return True

    def claim_any(
        self, event_id: str, shard_count: int, rng: random.Random, give_up_at: float | None = None
    ) -> tuple[str, bool]:
        """Pick any shard of the event, waiting like ``claim_likely``."""
        with self._lock:
            self._shard_count.setdefault(event_id, shard_count)
            give_up_at = self._give_up_at(give_up_at)
            candidates = [shard_id(i) for i in range(shard_count)]
            while True:
                picked = self._pick(event_id, candidates, rng, give_up_at)
                if picked is not None:
                    return picked

    def _pick(
        self, event_id: str, candidates: list[str], rng: random.Random, give_up_at: float
    ) -> tuple[str, bool] | None:
        """Claim a free candidate, or wait in line for one (first come, first served).

        Returns ``(shard, True)`` when claimed, None when told to look again (what is known
        of the event changed), and an unclaimed candidate once ``give_up_at`` has passed.
        A shard that is released goes straight to the buyer first in line, so a newcomer can
        never overtake buyers already waiting.
        """
        line = self._lines.setdefault(event_id, deque())
        free = [s for s in candidates if (event_id, s) not in self._claimed]
        if free and not line:
            return self._claim(event_id, rng.choice(free)), self.exclusive
        if not self.exclusive:
            return rng.choice(candidates), False
        me = _Waiter(threading.Condition(self._lock))
        line.append(me)
        try:
            while me.shard is None and not me.look_again:
                left = give_up_at - self._clock()
                if left <= 0:
                    return rng.choice(candidates), False
                me.wake.wait(left)
            return (me.shard, True) if me.shard is not None else None
        finally:
            if me in line:
                line.remove(me)

    def _wake_all(self, event_id: str) -> None:
        for waiter in self._lines.get(event_id, ()):
            waiter.look_again = True
            waiter.wake.notify()

    def _give_up_at(self, deadline: float | None) -> float:
        latest = self._clock() + self.MAX_WAIT_S
        return latest if deadline is None else min(latest, deadline)

    def claim_allocation(
        self, event_id: str, shards: list[InventoryShard], quantity: int, rng: random.Random, mine: list[str]
    ) -> dict[str, int]:
        """Plan ``quantity`` tickets over ``shards`` nobody else in this process is trying
        (``mine`` are the caller's own claims), claim the planned shards and add them to ``mine``.

        Raises ``SoldOut``/``NotEnoughTickets`` when ``shards`` cannot serve the order at all,
        and ``ShardsBusy`` (retry) when they could but other buyers are on them.
        """
        with self._lock:
            free = [x for x in shards if x.id in mine or (event_id, x.id) not in self._claimed]
            try:
                allocations = plan_allocation(free, quantity, event_id, rng)
            except SoldOut:
                plan_allocation(shards, quantity, event_id, rng)  # really none left?
                raise ShardsBusy(event_id) from None
            if self.exclusive:
                mine.extend(self._claim(event_id, s) for s in allocations if s not in mine)
            return allocations

    def release(self, event_id: str, shards: Iterable[str]) -> None:
        """Give up claims; each shard still worth trying goes to the buyer first in line."""
        with self._lock:
            line = self._lines.get(event_id)
            stocked = self._with_stock.get(event_id)
            for s in shards:
                if (event_id, s) not in self._claimed:
                    continue
                worth_trying = stocked is None or s in stocked
                if line and worth_trying:
                    waiter = line.popleft()
                    waiter.shard = s  # the claim passes on without ever being free
                    waiter.wake.notify()
                else:
                    self._claimed.discard((event_id, s))

    def _claim(self, event_id: str, shard: str) -> str:
        if self.exclusive:
            self._claimed.add((event_id, shard))
        return shard


ROUTER = ShardRouter()


def _interpret(
    request: PurchaseRequest, snaps: dict[str, Any], guess: str | None
) -> tuple[Event, Order | None, BuyerRecord, Any, InventoryShard | None, Any]:
    ev = snaps["event"]
    if not ev.exists:
        raise EventNotFound(request.event_id)
    event = event_from_doc(request.event_id, ev.to_dict() or {})
    order_snap = snaps["order"]
    existing = order_from_doc(order_snap.id, order_snap.to_dict()) if order_snap.exists else None
    buyer_snap = snaps["buyer"]
    buyer = buyer_from_doc(
        request.event_id, request.user_id, buyer_snap.to_dict() if buyer_snap.exists else None
    )
    shard_snap = snaps.get("shard")
    shard = None
    if guess is not None and shard_snap is not None and shard_snap.exists:
        shard = shard_from_doc(shard_snap.id, shard_snap.to_dict() or {})
    return event, existing, buyer, buyer_snap, shard, shard_snap


def _refs(db: firestore.Client, request: PurchaseRequest, guess: str | None) -> dict[str, Any]:
    refs = {
        "event": event_ref(db, request.event_id),
        "order": order_ref(db, request.order_id),
        "buyer": buyer_ref(db, request.event_id, request.user_id),
    }
    if guess is not None:
        refs["shard"] = shard_ref(db, request.event_id, guess)
    return refs


def _by_path(snapshots: Iterable[Any], refs: dict[str, Any]) -> dict[str, Any]:
    by_path = {s.reference.path: s for s in snapshots}
    return {name: by_path[ref.path] for name, ref in refs.items()}


def _stocked_shards_query(db: firestore.Client, event_id: str) -> Any:
    return inventory_col(db, event_id).where(filter=FieldFilter("available", ">", 0))


def _build(
    request: PurchaseRequest, event: Event, allocations: dict[str, int]
) -> tuple[Order, list[Ticket], messages.OutboxMessage]:
    ticket_ids = ticket_ids_for(request.order_id, request.quantity)
    order = Order(
        id=request.order_id,
        event_id=event.id,
        user_id=request.user_id,
        quantity=request.quantity,
        unit_price=event.price,
        currency=event.currency,
        allocations=allocations,
        idempotency_key=request.idempotency_key,
        ticket_ids=tuple(ticket_ids),
    )
    tickets = [
        Ticket(id=t, order_id=order.id, event_id=event.id, user_id=request.user_id, code=new_ticket_code())
        for t in ticket_ids
    ]
    return order, tickets, messages.order_confirmed(order)


def _write(
    db: firestore.Client,
    writer: Any,  # WriteBatch or Transaction: same write API
    *,
    request: PurchaseRequest,
    event: Event,
    buyer: BuyerRecord,
    buyer_snapshot: Any,
    chosen: dict[str, tuple[InventoryShard, Any]],
    allocations: dict[str, int],
    guarded: bool,
) -> tuple[Order, dict[str, int]]:
    """Stage every write of the purchase; returns the order and what each shard has left."""
    order, tickets, message = _build(request, event, allocations)
    left: dict[str, int] = {}
    for sid, taken in allocations.items():
        shard, snap = chosen[sid]
        after = shard.take(taken)
        left[sid] = after.available
        option = db.write_option(last_update_time=snap.update_time) if guarded else None
        writer.update(
            shard_ref(db, event.id, sid),
            {"available": after.available, "sold": after.sold},
            option=option,
        )
    new_buyer = replace(buyer, tickets=buyer.tickets + request.quantity, order_ids=(*buyer.order_ids, order.id))
    if buyer_snapshot.exists:
        option = db.write_option(last_update_time=buyer_snapshot.update_time) if guarded else None
        writer.update(buyer_ref(db, event.id, request.user_id), buyer_to_doc(new_buyer), option=option)
    else:
        writer.create(buyer_ref(db, event.id, request.user_id), buyer_to_doc(new_buyer))
    write_order_documents(db, writer, order, tickets, message)
    return order, left


def write_order_documents(
    db: firestore.Client, writer: Any, order: Order, tickets: list[Ticket], message: messages.OutboxMessage
) -> None:
    """Stage the documents every new order writes: the order, its tickets and its outbox message.

    All are ``create`` writes, so a second commit of the same order fails as a whole
    (ALREADY_EXISTS) instead of selling twice. Shared by purchases and confirmed holds.
    """
    writer.create(order_ref(db, order.id), order_to_doc(order))
    for ticket in tickets:
        writer.create(ticket_ref(db, ticket.id), ticket_to_doc(ticket))
    writer.create(outbox_ref(db, message.id), outbox_to_doc(message))


@dataclass(frozen=True)
class _Reader:
    """Reads of one attempt: plain reads, or reads inside a transaction (which take locks)."""

    get_all: Callable[[list[Any]], Iterable[Any]]
    query: Callable[[Any], Iterable[Any]]

    def get(self, ref: Any) -> Any:
        return next(iter(self.get_all([ref])))


def _attempt(
    db: firestore.Client,
    request: PurchaseRequest,
    rng: random.Random,
    router: ShardRouter,
    reader: _Reader,
    writer: Any,
    *,
    guarded: bool,
    mine: list[str],
    give_up_at: float | None,
) -> Outcome | tuple[Order, dict[str, int]]:
    """Read, decide and stage the writes. Returns the replayed ``Outcome``, or the new order
    and what its shards have left once committed.

    Shards claimed from the router are added to ``mine``; the caller releases them once the
    commit has returned.
    """
    event_id = request.event_id
    picked = router.claim_likely(event_id, rng, give_up_at)
    guess = picked[0] if picked else None
    if picked and picked[1]:
        mine.append(picked[0])
    refs = _refs(db, request, guess)
    snaps = _by_path(reader.get_all(list(refs.values())), refs)
    event, existing, buyer, buyer_snap, shard, shard_snap = _interpret(request, snaps, guess)
    router.learn_event(event)
    if existing is not None:
        existing.require_same_request(event_id, request.quantity)
        return Outcome(existing, replayed=True)
    event.require_on_sale()
    event.validate_quantity(request.quantity)
    event.check_user_limit(buyer.counted, request.quantity)  # bought + held

    if guess is None and router.knows(event_id):
        # Sold out when this process last looked: re-check now and then, not for every buyer.
        if not router.should_recheck_sold_out(event_id):
            raise SoldOut(event_id)
    elif guess is None:  # first buyer of this event in this process
        guess, claimed = router.claim_any(event_id, event.shard_count, rng, give_up_at)
        if claimed:
            mine.append(guess)
        shard_snap = reader.get(shard_ref(db, event_id, guess))
        shard = shard_from_doc(guess, shard_snap.to_dict() or {}) if shard_snap.exists else None

    if shard is not None and shard.available >= request.quantity:
        chosen = {shard.id: (shard, shard_snap)}
        allocations = {shard.id: request.quantity}
    else:
        if shard is not None and shard.available == 0:
            router.forget(event_id, shard.id)  # a shard with a ticket or two left stays a candidate
        found = list(reader.query(_stocked_shards_query(db, event_id)))
        chosen = {f.id: (shard_from_doc(f.id, f.to_dict() or {}), f) for f in found}
        router.learn_stock(event_id, (c[0] for c in chosen.values()))
        allocations = router.claim_allocation(event_id, [c[0] for c in chosen.values()], request.quantity, rng, mine)

    return _write(
        db,
        writer,
        request=request,
        event=event,
        buyer=buyer,
        buyer_snapshot=buyer_snap,
        chosen=chosen,
        allocations=allocations,
        guarded=guarded,
    )


def attempt_guarded_batch(
    db: firestore.Client,
    request: PurchaseRequest,
    rng: random.Random,
    router: ShardRouter = ROUTER,
    give_up_at: float | None = None,
) -> Outcome:
    """One optimistic attempt. Raises a domain error, or one of ``RETRYABLE`` on a lost race."""
    mine: list[str] = []
    try:
        batch = db.batch()
        reader = _Reader(get_all=db.get_all, query=lambda q: q.stream())
        result = _attempt(db, request, rng, router, reader, batch, guarded=True, mine=mine, give_up_at=give_up_at)
        if isinstance(result, Outcome):
            return result
        batch.commit()
        order, left = result
        for sid, remaining in left.items():
            if remaining == 0:
                router.forget(request.event_id, sid)
        return Outcome(order, replayed=False)
    finally:
        router.release(request.event_id, mine)


def attempt_transaction(
    db: firestore.Client,
    request: PurchaseRequest,
    rng: random.Random,
    router: ShardRouter = ROUTER,
    give_up_at: float | None = None,
) -> Outcome:
    """One attempt inside a Firestore transaction (its reads lock the documents they read)."""
    mine: list[str] = []
    transaction = db.transaction(max_attempts=1)

    @firestore.transactional
    def run(txn: firestore.Transaction) -> Outcome:
        reader = _Reader(get_all=txn.get_all, query=txn.get)
        result = _attempt(db, request, rng, router, reader, txn, guarded=False, mine=mine, give_up_at=give_up_at)
        return result if isinstance(result, Outcome) else Outcome(result[0], replayed=False)

    try:
        outcome: Outcome = run(transaction)
        return outcome
    except ValueError as exc:
        # The client library reports a transaction that could not commit within its attempts
        # as ValueError; to the caller it is a lost race like any other.
        if "Failed to commit transaction" in str(exc):
            raise gexc.Aborted(str(exc)) from exc
        raise
    finally:
        router.release(request.event_id, mine)
