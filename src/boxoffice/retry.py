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
