"""The emulator's clock: wall time plus an offset that tests move forward to reach expiry without waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 with milliseconds and `Z`, the way the v2 API writes every timestamp."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(raw: str) -> datetime:
    """Parse an RFC 3339 timestamp (as the v2 API accepts in filters); raise ValueError when it is not one."""
    moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {raw!r} has no time zone")
    return moment.astimezone(UTC)


class Clock:
    """Domain time of the emulator (object timestamps, expiry); webhook signatures always use real time.

    Signatures stay on real time because receivers check `t=` against their own clock: a moved clock
    must never make a genuine delivery look stale.
    """

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self._offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    @property
    def offset(self) -> timedelta:
        return self._offset

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock forward (never back: time going backwards is not something Stripe does)."""
        if delta < timedelta(0):
            raise ValueError("the clock only moves forward")
        self._offset += delta
        return self.now()
