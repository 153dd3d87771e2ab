"""How many requests each API key made, as the benchmark and tests count them (`GET /_emulator/requests`).

Keys are named by a prefix of their SHA-256, never by the key: the report is served over HTTP.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

#: the window of `peak_per_second`: Stripe states its limits per second
WINDOW_S = 1.0


@dataclass(slots=True)
class _KeyUsage:
    requests: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    peak_per_second: int = 0
    #: arrival times of the last WINDOW_S, refused ones included: what the key asked of Stripe
    recent: deque[float] = field(default_factory=deque)


class Usage:
    """Requests per key (by operation), 429s of the rate limit, and the most requests in any one second."""

    def __init__(self) -> None:
        self._keys: dict[str, _KeyUsage] = {}

    def count(self, key_hash: str, operation: str) -> None:
        usage = self._keys.setdefault(key_hash, _KeyUsage())
        usage.requests[operation] += 1
        now = time.monotonic()
        usage.recent.append(now)
        while usage.recent and usage.recent[0] <= now - WINDOW_S:
            usage.recent.popleft()
        usage.peak_per_second = max(usage.peak_per_second, len(usage.recent))

    def limited(self, key_hash: str) -> None:
        self._keys.setdefault(key_hash, _KeyUsage()).rate_limited += 1

    def report(self) -> dict[str, Any]:
        return {
            "keys": [
                {
                    "key": f"sha256:{key_hash[:16]}",
                    "requests": sum(usage.requests.values()),
                    "by_operation": dict(sorted(usage.requests.items())),
                    "rate_limited": usage.rate_limited,
                    "peak_per_second": usage.peak_per_second,
                }
                for key_hash, usage in sorted(self._keys.items())
            ]
        }

    def reset(self) -> None:
        self._keys.clear()
