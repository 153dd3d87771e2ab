"""UTC timestamps with milliseconds, cheap to take many times per millisecond: a busy ingress stamps every
delivery and every log line, and formatting a datetime each time cost more than the rest of a log line."""

from __future__ import annotations

import time


class MillisecondClock:
    """`clock(seconds)` -> "2026-11-22T03:12:16.123" + `suffix`; the date part is formatted once per second."""

    def __init__(self, suffix: str) -> None:
        self._suffix = suffix
        # (second, its formatted date and time), replaced as one value so threads never see half an update
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, seconds: float) -> str:
        # rounded to the microsecond first, as datetime.fromtimestamp does (x.183 may be stored as x.18299999)
        second, micro = divmod(round(seconds * 1_000_000), 1_000_000)
        milli = micro // 1000
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{cached[1]}.{milli:03d}{self._suffix}"
