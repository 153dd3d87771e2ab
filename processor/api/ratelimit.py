"""A token bucket per key (here: per sandbox), held in this process's memory.

Per process on purpose: the limit protects Stripe's rate budget and stops a user (or a script) from renewing
a link in a loop, and N processes behind a load balancer allow at most N times the rate, which is still
bounded. A shared limit would need a round trip to PostgreSQL on every request of a public endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: at most this many keys are tracked; beyond it, keys whose bucket refilled completely are forgotten
DEFAULT_MAX_KEYS = 10_000


class KeyedRateLimit:
    """`capacity` actions per key, refilled evenly over `period_s` (3 per 60 s: one every 20 s, bursts of 3)."""

    def __init__(
        self,
        capacity: int,
        period_s: float,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or period_s <= 0:
            raise ValueError("capacity must be >= 1 and period_s > 0")
        self.capacity = float(capacity)
        self.rate = capacity / period_s
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """Take one token for `key`: 0.0 if allowed, else the seconds until one is available."""
        now = self._clock()
        tokens, updated = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - updated) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > self.max_keys:
            self._forget_full(now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        # a full bucket is the same as no bucket, so dropping it changes no answer
        for key, (tokens, updated) in list(self._buckets.items()):
            if tokens + (now - updated) * self.rate >= self.capacity:
                del self._buckets[key]
