"""How long to wait before retrying: one jittered backoff for every retry loop (Stripe calls, Kafka admin, the
relay, the consumer, the worker supervisor), so they all behave alike under a shared outage."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base_s: float, max_s: float, retry_after: float | None = None) -> float:
    """Full-jitter exponential backoff for retry number `attempt` (1-based), never below Retry-After.

    Full jitter spreads the retries of many callers that failed together, so they do not return together.
    """
    delay = random.uniform(0, min(max_s, base_s * 2 ** (attempt - 1)))
    return max(delay, retry_after or 0.0)
