"""Exponential backoff with full jitter, shared by purchases, triggers and message handlers.

Full jitter (a random delay between 0 and the exponential bound) spreads retrying clients
apart, so buyers who collided once do not collide again in lock-step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from google.api_core import exceptions as gexc

from boxoffice.domain.errors import ContentionTimeout

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.005
    cap_s: float = 0.25
    multiplier: float = 2.0

    def bound(self, attempt: int) -> float:
        """Upper bound of the delay before retry number ``attempt`` (1-based)."""
        return min(self.cap_s, self.base_s * self.multiplier ** max(0, attempt - 1))

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, self.bound(attempt))


def call_with_backoff(
    attempt: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...],
    deadline_s: float,
    backoff: Backoff,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[T, int]:
    """Call ``attempt`` until it returns, retrying ``retry_on`` errors after jittered delays.

    Returns the result and the number of attempts. When the next delay would pass
    ``deadline_s``, the last retryable error propagates for the caller to name.
    """
    rng = rng or random.Random()
    give_up_at = time.monotonic() + deadline_s
    n = 0
    while True:
        n += 1
        try:
            return attempt(), n
        except retry_on:
            delay = backoff.delay(n, rng)
            if time.monotonic() + delay >= give_up_at:
                raise
            sleep(delay)


# Errors of a guarded commit that mean "another writer got there first" or "try again":
# never shown to a caller as such (``commit_with_retries`` names them ContentionTimeout at the end).
RETRYABLE = (
    gexc.Conflict,  # ABORTED (transaction lock timeout), ALREADY_EXISTS (created meanwhile)
    gexc.FailedPrecondition,  # a guarded document changed since it was read
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
)
DEFAULT_BACKOFF = Backoff(base_s=0.005, cap_s=0.25)


def commit_with_retries(
    what: str,
    attempt: Callable[[], T],
    *,
    deadline_s: float = 10.0,
    backoff: Backoff = DEFAULT_BACKOFF,
    rng: random.Random | None = None,
) -> tuple[T, int]:
    """The one retry style of guarded commits (confirm, release, cancel, new tickets): call
    ``attempt`` (read, check, commit) until it lands, retrying lost races with jittered backoff;
    raises ``ContentionTimeout`` ("could not {what} ...") when ``deadline_s`` passes."""
    try:
        return call_with_backoff(attempt, retry_on=RETRYABLE, deadline_s=deadline_s, backoff=backoff, rng=rng)
    except RETRYABLE as exc:
        raise ContentionTimeout(
            f"could not {what} within {deadline_s:.1f}s because of load; please try again"
        ) from exc
