"""The API's bad days on demand: latency, injected 429/500s with `Stripe-Should-Retry`, and a rate limit."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from processor.dev.emulator import errors
from processor.dev.emulator.config import Knobs


class RateLimiter:
    """A token bucket per API key: `rps` requests per second, bursts up to one second's worth."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, rps: float) -> bool:
        if rps <= 0:
            return True
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (rps, now))
        tokens = min(rps, tokens + (now - last) * rps)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True


class Faults:
    """Applied to every /v2 request after authentication, in the order Stripe would show them."""

    def __init__(self, knobs: Callable[[], Knobs], rng: random.Random) -> None:
        self._knobs = knobs
        self._rng = rng
        self._limiter = RateLimiter()

    async def apply(self, key_scope: str) -> None:
        """Sleep for the configured latency, then raise the error this request is chosen to get, if any."""
        knobs = self._knobs()
        if not self._limiter.allow(key_scope, knobs.rate_limit_rps):
            raise errors.ApiError(
                429,
                "rate_limit",
                "rate_limit",
                "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
                headers={"Stripe-Should-Retry": "true", "Retry-After": "1"},
            )
        if knobs.api_latency_s:
            await asyncio.sleep(knobs.api_latency_s)
        if knobs.api_error_rate and self._rng.random() < knobs.api_error_rate:
            status = self._rng.choice(knobs.api_error_statuses)
            if status == 429:
                raise errors.ApiError(
                    429,
                    "rate_limit",
                    "lock_timeout",
                    "This object cannot be accessed right now because another API request or Stripe process "
                    "is currently accessing it (injected by the emulator).",
                    headers={"Stripe-Should-Retry": "true"},
                )
            raise errors.ApiError(
                status,
                "api_error",
                "internal_error",
                "An unknown error occurred (injected by the emulator).",
                headers={"Stripe-Should-Retry": "true"},
            )
