"""The one in-process token bucket: `capacity` tokens per key, refilled at `rate` per second.

Used where a limit lives in one process's memory: the refresh URL's renewals per sandbox, the emulator's
requests per API key, and a Stripe budget of a process that has no database to share one through
(`processor.stripe_api.budget`; the shared budget runs the same arithmetic inside PostgreSQL). `take` never
blocks: it answers how long to wait, so an HTTP handler can say Retry-After and an async caller can sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: at most this many keys are tracked; beyond it, keys whose bucket refilled completely are forgotten
DEFAULT_MAX_KEYS = 10_000


class TokenBuckets:
    """One bucket per key: bursts of `capacity`, `rate` tokens per second after that."""

    def __init__(
        self,
        capacity: float,
        rate: float,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or rate <= 0:
            raise ValueError("capacity must be >= 1 and rate > 0")
        self.capacity = float(capacity)
        self.rate = float(rate)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    @classmethod
    def per_period(
        cls,
        count: int,
        period_s: float,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> TokenBuckets:
        """`count` actions per `period_s`, spread evenly (3 per 60 s: bursts of 3, then one every 20 s)."""
        if count < 1 or period_s <= 0:
            raise ValueError("count must be >= 1 and period_s > 0")
        return cls(count, count / period_s, max_keys=max_keys, clock=clock)

    def take(self, key: str, reserve: float = 0.0) -> float:
        """Take one token for `key`: 0.0 if taken, else the seconds until one is available (nothing taken).

        `reserve` tokens are left for others: a caller with a reserve takes only from a bucket holding at least
        1 + reserve, which is how a lower priority leaves the last tokens to a higher one."""
        now = self._clock()
        tokens, updated = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - updated) * self.rate)
        if tokens < 1 + reserve:
            self._buckets[key] = (tokens, now)
            return (1 + reserve - tokens) / self.rate
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > self.max_keys:
            self._forget_full(now)
        return 0.0

    def drain(self, key: str, seconds: float) -> None:
        """Empty `key`'s bucket so that nothing is taken for `seconds` (the other side said: slow down)."""
        self._buckets[key] = (-seconds * self.rate, self._clock())

    def _forget_full(self, now: float) -> None:
        # a full bucket is the same as no bucket, so dropping it changes no answer
        for key, (tokens, updated) in list(self._buckets.items()):
            if tokens + (now - updated) * self.rate >= self.capacity:
                del self._buckets[key]
