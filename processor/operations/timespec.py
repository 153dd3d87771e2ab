"""Times operators type: `3d`, `90m`, `1h30m` (ago, as a duration) or an RFC 3339 timestamp / unix seconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `2h`, `3d`, `1w` or combinations such as `1h30m`; ValueError otherwise."""
    raw = text.strip().lower()
    parts = _PART.findall(raw)
    if not raw or "".join(f"{n}{u}" for n, u in parts) != raw:
        raise ValueError(f"{text!r} is not a duration such as 30m, 2h or 3d")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """A point in time: a duration means that long before `now`; else RFC 3339 or unix seconds (UTC)."""
    now = now or datetime.now(UTC)
    raw = text.strip()
    if raw.isdigit():
        return datetime.fromtimestamp(int(raw), UTC)
    try:
        return now - parse_duration(raw)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (3d, 2h) nor an RFC 3339 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
