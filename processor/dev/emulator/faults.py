"""The API's bad days on demand: latency, injected 429/500s with `Stripe-Should-Retry`, and a rate limit."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from processor.dev.emulator import errors
from processor.dev.emulator.config import Knobs
from processor.dev.emulator.usage import Usage
from processor.tokenbucket import TokenBuckets


class RateLimiter:
    """A token bucket per API key, as Stripe keeps one: `rps` requests per second, bursts of one second's worth."""

    def __init__(self) -> None:
        self._rps = 0.0
        self._buckets: TokenBuckets | None = None

    def allow(self, key: str, rps: float) -> bool:
        if rps <= 0:
            return True
        if self._buckets is None or rps != self._rps:  # the knob changed: start afresh at the new rate
            self._rps, self._buckets = rps, TokenBuckets(max(1.0, rps), rps)
        return self._buckets.take(key) == 0.0


class Faults:
    """Applied to every /v2 request after authentication, in the order Stripe would show them."""

    def __init__(self, knobs: Callable[[], Knobs], rng: random.Random) -> None:
        self._knobs = knobs
        self._rng = rng
        self._limiter = RateLimiter()
        self.usage = Usage()

    async def apply(self, key_scope: str, operation: str = "other") -> None:
        """Sleep for the configured latency, then raise the error this request is chosen to get, if any.

        `key_scope` is the API key's hash: every caller of one key shares its limit, as on Stripe."""
        knobs = self._knobs()
        self.usage.count(key_scope, operation)
        if not self._limiter.allow(key_scope, knobs.rate_limit_rps):
            self.usage.limited(key_scope)
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
