"""What the operator API reads from a request: JSON bodies and query values, checked at the edge.

Anything an operator must fix raises `BadRequest` (answered 400 with its message); a value is refused here,
before it reaches the database or the log, when no record could match it (a NUL, a partition beyond int32).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from processor.operations import dlq as dlq_ops
from processor.operations.replay import SOURCES, OffsetRange, ReplayRequest, parse_offsets

#: partitions are int32 and offsets int64 in the log (Kafka's types); larger numbers name nothing
_MAX_PARTITION, _MAX_OFFSET = 2**31 - 1, 2**63 - 1


class BadRequest(Exception):
    """A request the operator must fix; the message goes back in the answer."""


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object ({} when empty)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def text(data: dict[str, Any] | Any, name: str) -> str | None:
    """The string `name` of a body or query (None when absent or empty)."""
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    if "\x00" in value:  # PostgreSQL text cannot hold it, and no id or time of ours has one
        raise BadRequest(f"{name} must not contain a NUL character")
    return value


def flag(data: dict[str, Any] | Any, name: str) -> bool:
    value = data.get(name, False)
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


def reconcile_limit(data: dict[str, Any] | Any, default: int) -> int:
    raw = data.get("limit", default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise BadRequest("limit must be an integer") from None
    if not 1 <= value <= 10_000:
        raise BadRequest("limit must be between 1 and 10000")
    return value


def _bounded(ranges: tuple[OffsetRange, ...]) -> tuple[OffsetRange, ...]:
    for r in ranges:
        if r.partition > _MAX_PARTITION or max(r.start, r.end or 0) > _MAX_OFFSET:
            raise BadRequest(f"partition {r.partition} or offsets beyond what a log holds")
    return ranges


def dlq_filter(data: dict[str, Any] | Any) -> dlq_ops.DlqFilter:
    return dlq_ops.DlqFilter(text(data, "error_class"), text(data, "event_type"), text(data, "sandbox_id"))


def replay_request(body: dict[str, Any]) -> ReplayRequest:
    """The replay a POST /v1/ops/replay body asks for."""
    source = text(body, "source")
    if source not in SOURCES:
        raise BadRequest(f"source must be one of {', '.join(SOURCES)}")
    since, until = text(body, "since"), text(body, "until")
    if source == "sandbox":  # the sandbox is the source here, not a DLQ filter
        return ReplayRequest(source, since=since, until=until, sandbox_id=text(body, "sandbox_id"))
    offsets = text(body, "offsets")
    return ReplayRequest(
        source=source,
        dlq=dlq_filter(body),
        since=since,
        until=until,
        offsets=_bounded(parse_offsets(offsets)) if offsets else (),
    )


def purge_coordinates(body: dict[str, Any]) -> list[str]:
    """The `partition:offset` list of a purge (empty = every open record matching the filter)."""
    if body.get("confirm") is not True:
        raise BadRequest('a purge needs "confirm": true')
    coordinates = body.get("coordinates") or []
    if not isinstance(coordinates, list) or not all(isinstance(x, str) for x in coordinates):
        raise BadRequest("coordinates must be a list of partition:offset strings")
    return coordinates
