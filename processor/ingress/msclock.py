"""UTC timestamps with milliseconds, cheap to take many times per millisecond: a busy ingress stamps every
delivery and every log line, and formatting a datetime each time cost more than the rest of a log line."""

from __future__ import annotations

import time


class MillisecondClock:
    """`clock(seconds)` -> "2026-11-22T03:12:16.123" + `suffix`, formatted once per millisecond (the date part
    once per second)."""

    def __init__(self, suffix: str) -> None:
        self._suffix = suffix
        # (second, its date and time) and (millisecond, whole text), each replaced as one value so that
        # threads never see half an update
        self._second: tuple[int, str] = (-1, "")
        self._milli: tuple[int, str] = (-1, "")

    def __call__(self, seconds: float) -> str:
        # rounded to the microsecond first, as datetime.fromtimestamp does (x.183 may be stored as x.18299999)
        milli = round(seconds * 1_000_000) // 1000
        cached = self._milli
        if cached[0] == milli:
            return cached[1]
        second = milli // 1000
        date = self._second
        if date[0] != second:
            date = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        text = f"{date[1]}.{milli % 1000:03d}{self._suffix}"
        self._milli = (milli, text)
        return text
