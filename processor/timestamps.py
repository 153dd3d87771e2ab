"""Timestamps as the processor writes them: RFC 3339 in UTC with milliseconds, like Stripe's v2 API.

A module of its own so that light callers (the inspection commands) need not import the lifecycle package.
"""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    """`moment` as an RFC 3339 UTC timestamp with milliseconds, like Stripe's v2 API writes them."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
