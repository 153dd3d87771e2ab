"""The per-sandbox token bucket behind the refresh URL's 429 (pure logic, with a fake clock)."""

from __future__ import annotations

import pytest

from processor.tokenbucket import TokenBuckets


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_three_per_minute_then_one_every_twenty_seconds() -> None:
    """A burst of 3 passes, the 4th waits 20 s, and 20 s later exactly one more passes."""
    clock = FakeClock()
    limit = TokenBuckets.per_period(3, 60.0, clock=clock)
    assert [limit.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take("a") == pytest.approx(20.0)
    assert limit.take("b") == 0.0
    clock.now += 20.0
    assert limit.take("a") == 0.0
    assert limit.take("a") > 0


def test_idle_keys_are_forgotten_beyond_the_cap() -> None:
    """Tracking stays bounded: keys whose bucket refilled are dropped, busy ones are kept."""
    clock = FakeClock()
    limit = TokenBuckets.per_period(1, 10.0, max_keys=2, clock=clock)
    limit.take("old")
    clock.now += 10.0
    limit.take("busy")
    limit.take("new")
    assert limit.take("busy") > 0  # still limited: not forgotten
    assert limit.take("old") == 0.0
