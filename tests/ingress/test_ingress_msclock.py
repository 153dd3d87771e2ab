"""The cached millisecond clock writes exactly what datetime formatting writes."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from processor.ingress.msclock import MillisecondClock
from processor.lifecycle.messages import rfc3339

RFC3339 = MillisecondClock("Z")
ISO = MillisecondClock("+00:00")


@given(st.lists(st.integers(min_value=0, max_value=4_102_444_800_000), min_size=1, max_size=20))
def test_same_text_as_datetime_for_any_millisecond(milliseconds: list[int]) -> None:
    """Any sequence of moments (cache hits and misses across seconds) formats as rfc3339() and isoformat() do."""
    for ms in milliseconds:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
        assert RFC3339(ms / 1000) == rfc3339(moment)
        assert RFC3339.encoded(ms / 1000) == rfc3339(moment).encode()
        assert ISO(ms / 1000) == moment.isoformat(timespec="milliseconds")


@given(
    st.integers(min_value=0, max_value=4_102_444_800_000),
    st.lists(st.integers(min_value=-3000, max_value=3000), min_size=1, max_size=20),
)
def test_cached_answers_equal_fresh_ones_at_millisecond_edges(millisecond: int, offsets_us: list[int]) -> None:
    """Moments a few microseconds either side of millisecond edges, asked after one another (each cached
    answer is checked against a clock that has cached nothing), text and bytes alike."""
    clock = MillisecondClock("Z")
    for offset in offsets_us:
        moment = millisecond / 1000 + offset / 1_000_000
        fresh = MillisecondClock("Z")
        assert clock(moment) == fresh(moment)
        assert clock.encoded(moment) == fresh(moment).encode()
