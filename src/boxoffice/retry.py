"""Exponential backoff with full jitter, shared by purchases, triggers and message handlers.

Full jitter (a random delay between 0 and the exponential bound) spreads retrying clients
apart, so buyers who collided once do not collide again in lock-step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


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
