"""UTC timestamps with milliseconds, cheap to take many times per millisecond: a busy ingress stamps every
delivery and every log line, and formatting a datetime each time cost more than the rest of a log line."""

from __future__ import annotations

import time


class MillisecondClock:
    """`clock(seconds)` -> "2026-11-22T03:12:16.123" + `suffix`, formatted once per millisecond (the date part
    once per second)."""

    def __init__(self, suffix: str) -> None:
        self._suffix = suffix
        # (second, its date and time) and (from, until, text, text as bytes) of the current millisecond, each
        # replaced as one value so that threads never see half an update
        self._second: tuple[int | None, str] = (None, "")
        self._milli: tuple[float, float, str, bytes] = (0.0, 0.0, "", b"")

    def __call__(self, seconds: float) -> str:
        cached = self._milli
        if cached[0] <= seconds < cached[1]:
            return cached[2]
        return self._format(seconds)[2]

    def encoded(self, seconds: float) -> bytes:
        """The same text as ASCII bytes (for Kafka record headers)."""
        cached = self._milli
        if cached[0] <= seconds < cached[1]:
            return cached[3]
        return self._format(seconds)[3]

    def _format(self, seconds: float) -> tuple[float, float, str, bytes]:
        # rounded to the microsecond first, as datetime.fromtimestamp does (x.183 may be stored as x.18299999)
        milli = round(seconds * 1_000_000) // 1000
        second = milli // 1000
        date = self._second
        if date[0] != second:
            date = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        text = f"{date[1]}.{milli % 1000:03d}{self._suffix}"
        # the cache answers for the millisecond less 2 us at either end: two float comparisons instead of the
        # rounding above, and a float error (under 1 us at today's dates) cannot put a moment in the wrong one
        cached = ((milli * 1000 + 2) / 1e6, (milli * 1000 + 998) / 1e6, text, text.encode())
        self._milli = cached
        return cached
