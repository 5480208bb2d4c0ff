"""A queued request's place in the admission queue, estimated from what the allocator reports. Pure.

Nobody counts the requests waiting in an event's queue: admitting a request is one Pub/Sub
publish from any app instance, with no Firestore write, and Pub/Sub tells no message its place.
What is known exactly:

- a request's arrival time ``queued_at`` (the instance's clock when the publish returned; Pub/Sub
  stamps ``publish_time`` a moment before it, both on synchronised clocks);
- ``answered_through``: the arrival time of the latest request the allocator answered. It answers
  in arrival order, so every request that arrived before it has its answer, and it writes this
  in the same commit as those answers (``QueueMeter``, carried by the lease's fence write).

From the requests it answered over the last ``WINDOW_S`` the allocator also reports its pace:
``answers_per_s`` (answers a second of its own time) and ``arrivals_per_s`` (those requests per
second of their arrival times: how densely they had come). A request that arrived ``gap``
seconds after ``answered_through`` then has about ``gap * arrivals_per_s`` requests ahead of it,
answered in about ``ahead / answers_per_s`` seconds (``place_in_queue``). The estimate assumes
the requests after ``answered_through`` came as densely as those just answered: it is close when
arrivals are steady, too high just after a burst that stopped, too low while arrivals ramp up.
docs/decisions.md ("A queued request's place") says why nothing more exact was built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

WINDOW_S = 10.0  # answers this recent make the pace
MIN_SPAN_S = 1.0  # arrivals measured over at least this long: a burst's instant is not its density


@dataclass(frozen=True)
class QueueProgress:
    """What the event's allocator last said about its queue (with its latest commit)."""

    as_of: datetime  # when the allocator wrote it
    answered_through: datetime | None  # arrival time of the latest request answered
    drained_at: datetime | None  # the allocator found the queue empty then, after its last answer
    answers_per_s: float  # over the last WINDOW_S (0: none)
    arrivals_per_s: float | None  # density of the recently answered arrivals (None: too few)
    live: bool = True  # an allocator holds the event's lease (the reader sets it from the expiry)

    def as_doc(self) -> dict[str, Any]:
        return {"as_of": self.as_of, "answered_through": self.answered_through, "drained_at": self.drained_at,
                "answers_per_s": round(self.answers_per_s, 3),
                "arrivals_per_s": None if self.arrivals_per_s is None else round(self.arrivals_per_s, 3)}


def progress_from_doc(doc: Mapping[str, Any], *, live: bool) -> QueueProgress:
    return QueueProgress(as_of=doc["as_of"], answered_through=doc.get("answered_through"),
                         drained_at=doc.get("drained_at"), answers_per_s=float(doc.get("answers_per_s") or 0.0),
                         arrivals_per_s=doc.get("arrivals_per_s"), live=live)


@dataclass(frozen=True)
class _Batch:
    at: datetime  # committed
    answered: int
    first_arrival: datetime
    last_arrival: datetime


@dataclass(frozen=True)
class QueueMeter:
    """The allocator's record of its pace: immutable, so a batch's progress can be staged in the
    commit and kept only if the commit lands."""

    since: datetime  # this allocator took the lease
    answered_through: datetime | None = None
    drained_at: datetime | None = None
    batches: tuple[_Batch, ...] = ()

    def with_batch(self, at: datetime, arrivals: Iterable[datetime]) -> QueueMeter:
        """After a batch answering requests that arrived at ``arrivals`` (redeliveries included:
        they were in the queue too)."""
        times = sorted(arrivals)
        if not times:
            return self
        through = times[-1] if self.answered_through is None else max(self.answered_through, times[-1])
        kept = tuple(b for b in self.batches if (at - b.at).total_seconds() < WINDOW_S)
        return replace(self, answered_through=through, drained_at=None,
                       batches=(*kept, _Batch(at, len(times), times[0], times[-1])))

    def drained(self, at: datetime) -> QueueMeter:
        """A pull found nothing waiting."""
        return replace(self, drained_at=at)

    def progress(self, now: datetime) -> QueueProgress:
        recent = [b for b in self.batches if (now - b.at).total_seconds() < WINDOW_S]
        answered = sum(b.answered for b in recent)
        elapsed = min(WINDOW_S, max(1.0, (now - self.since).total_seconds()))
        density = None
        if answered >= 2:
            span = (max(b.last_arrival for b in recent) - min(b.first_arrival for b in recent)).total_seconds()
            density = answered / max(span, MIN_SPAN_S)
        return QueueProgress(as_of=now, answered_through=self.answered_through, drained_at=self.drained_at,
                             answers_per_s=answered / elapsed, arrivals_per_s=density)


WAITING, QUEUED, NEXT = "waiting_for_allocator", "queued", "next"


@dataclass(frozen=True)
class Place:
    """A pending request's place: ``waiting_for_allocator`` (no allocator holds the queue now:
    nothing moves, the request keeps its place), ``queued`` (``ahead`` requests before it, about)
    or ``next`` (nothing known to be ahead: its answer is being made)."""

    state: str
    queued_at: datetime
    queued_s: float  # since it arrived
    ahead: int | None  # estimated requests before it without an answer (None: not known yet)
    eta_s: float | None  # estimated seconds until its answer (None: not known yet)
    answering_arrivals_of: datetime | None  # arrival time of the latest request answered


def place_in_queue(queued_at: datetime, progress: QueueProgress | None, now: datetime) -> Place:
    """Where a request that arrived at ``queued_at`` and has no answer stands (module docstring)."""
    queued_s = max(0.0, (now - queued_at).total_seconds())
    if progress is None or not progress.live:
        through = progress.answered_through if progress else None
        return Place(WAITING, queued_at, queued_s, None, None, through)
    through = progress.answered_through
    start = max((t for t in (through, progress.drained_at) if t is not None), default=None)
    if start is None or queued_at <= start:
        # Arrived before the latest answer (its own batch is being committed) or before the queue
        # was last found empty (its delivery is on the way); or an allocator that answered
        # nothing yet and found nothing: nothing is known to be ahead.
        ahead = 0 if start is not None else None
        return Place(NEXT if start is not None else QUEUED, queued_at, queued_s, ahead,
                     0.0 if ahead == 0 else None, through)
    gap = (queued_at - start).total_seconds()
    if progress.arrivals_per_s is None:
        return Place(QUEUED, queued_at, queued_s, None, None, through)
    ahead = round(gap * progress.arrivals_per_s)
    eta = ahead / progress.answers_per_s if progress.answers_per_s > 0 else None
    return Place(QUEUED if ahead > 0 else NEXT, queued_at, queued_s, ahead,
                 None if eta is None else round(eta, 1), through)


def backlog(progress: QueueProgress | None, now: datetime) -> tuple[int | None, float | None]:
    """For a dashboard: (about how many requests wait, at most how long the oldest of them has
    waited in seconds); (None, None) while no allocator holds the queue; (0, 0.0) when it last
    found the queue empty."""
    if progress is None or not progress.live:
        return None, None
    if progress.drained_at is not None:
        return 0, 0.0
    place = place_in_queue(now, progress, now)
    through = progress.answered_through
    lag = None if through is None else round(max(0.0, (now - through).total_seconds()), 1)
    return place.ahead, lag
