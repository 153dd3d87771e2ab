"""Id-level views of the events the processor handled: was event X processed, when, with which outcome, and
where it went (the history rows it wrote in each sandbox, anomalies, the DLQ); processed events page by page;
and the v1 account events no sandbox matches yet (they set a flag as soon as one does).

Lists are newest first and paged by an opaque cursor: pass a page's `next_cursor` to get the next one; a page
without `next_cursor` is the last.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.operations import dlq as dlq_ops
from processor.operations.inspect import plain_row
from processor.settings import Settings
from processor.timestamps import rfc3339

#: rows per page unless asked otherwise, and the most one page may hold
DEFAULT_PAGE = 50
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list and the cursor of the next (None on the last page)."""

    data: list[dict[str, Any]]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"data": self.data, "next_cursor": self.next_cursor}


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """The parts `encode_cursor` packed; ValueError for anything else (a cursor is opaque to callers)."""
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise ValueError("not a valid cursor") from None
    if not isinstance(parts, list) or len(parts) != arity:
        raise ValueError("not a valid cursor")
    return parts


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
    return limit


async def show_event(settings: Settings, log: EventLog, db: Database, event_id: str) -> dict[str, Any] | None:
    """Everything known about one event id; None when no table and no dead letter knows it.

    `status` sums it up: `processed` (see `processed.outcome`), `dead_lettered` (on the DLQ, not applied), or
    or `recorded` (rows name it but it was not applied, e.g. an anomaly whose dead letter is gone)."""
    async with db.pool.acquire() as conn:
        processed = await conn.fetchrow(
            "SELECT event_type, sandbox_id, outcome, processed_at FROM processed_events WHERE event_id = $1", event_id
        )
        history = await conn.fetch(
            "SELECT sandbox_id, id, kind, from_state, to_state, observed, sequence, event_type, reason, occurred_at,"
            " recorded_at FROM sandbox_history WHERE event_id = $1 ORDER BY id",
            event_id,
        )
        anomalies = await conn.fetch(
            "SELECT sandbox_id, current_state, observed_state, reason, recorded_at FROM anomalies"
            " WHERE event_id = $1 ORDER BY id",
            event_id,
        )
        account = await conn.fetchrow(
            "SELECT account, event_type, created_ms, (SELECT array_agg(id ORDER BY id) FROM sandboxes"
            " WHERE sandbox_account = a.account OR owner_account = a.account) AS sandboxes"
            " FROM account_events a WHERE event_id = $1",
            event_id,
        )
    dead = [entry.summary() async for entry in _dead_letters(settings, log, db, event_id)]
    if processed is None and not history and not anomalies and account is None and not dead:
        return None
    status = "processed" if processed is not None else "dead_lettered" if dead else "recorded"
    return {
        "event_id": event_id,
        "status": status,
        "processed": None if processed is None else plain_row(processed),
        "sandboxes": sorted({h["sandbox_id"] for h in history} | {a["sandbox_id"] for a in anomalies}),
        "history": [plain_row(h) for h in history],
        "anomalies": [plain_row(a) for a in anomalies],
        "account_event": None if account is None else _account_event(account),
        "dead_letters": dead,
    }


async def _dead_letters(
    settings: Settings, log: EventLog, db: Database, event_id: str
) -> AsyncIterator[dlq_ops.DlqEntry]:
    async for chunk in dlq_ops.dlq_entries(settings, log, db, include_resolved=True):
        for entry in chunk:
            if entry.event_id == event_id:
                yield entry


def _account_event(row: Any) -> dict[str, Any]:
    return {
        "account": row["account"],
        "event_type": row["event_type"],
        "created": rfc3339(datetime.fromtimestamp(int(row["created_ms"]) / 1000, UTC)),
        "matched_sandboxes": list(row["sandboxes"] or []),
    }


async def list_processed(
    db: Database,
    *,
    sandbox_id: str | None = None,
    outcome: str | None = None,
    event_type: str | None = None,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
) -> Page:
    """Processed events, newest first, filtered by sandbox, outcome and type (None matches anything)."""
    check_limit(limit)
    before_at, before_id = None, None
    if cursor:
        at, before_id = decode_cursor(cursor, 2)
        before_at = datetime.fromisoformat(str(at))
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event_id, event_type, sandbox_id, outcome, processed_at FROM processed_events"
            " WHERE ($1::text IS NULL OR sandbox_id = $1) AND ($2::text IS NULL OR outcome = $2)"
            " AND ($3::text IS NULL OR event_type = $3)"
            " AND ($4::timestamptz IS NULL OR (processed_at, event_id) < ($4, $5::text))"
            " ORDER BY processed_at DESC, event_id DESC LIMIT $6",
            sandbox_id,
            outcome,
            event_type,
            before_at,
            before_id,
            limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    # the cursor keeps the database's microseconds: an RFC 3339 rendering with milliseconds would skip rows
    next_cursor = encode_cursor(rows[-1]["processed_at"].isoformat(), rows[-1]["event_id"]) if more else None
    return Page([plain_row(r) for r in rows], next_cursor)


async def unmatched_account_events(db: Database, *, limit: int = DEFAULT_PAGE, cursor: str | None = None) -> Page:
    """v1 account events whose account no sandbox has (yet), newest first: flags waiting for their sandbox."""
    check_limit(limit)
    before_ms, before_id = decode_cursor(cursor, 2) if cursor else (None, None)
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT a.event_id, a.account, a.event_type, a.created_ms, p.processed_at FROM account_events a"
            " LEFT JOIN processed_events p USING (event_id)"
            " WHERE NOT EXISTS (SELECT 1 FROM sandboxes s WHERE s.sandbox_account = a.account"
            " OR s.owner_account = a.account)"
            " AND ($1::bigint IS NULL OR (a.created_ms, a.event_id) < ($1, $2::text))"
            " ORDER BY a.created_ms DESC, a.event_id DESC LIMIT $3",
            before_ms,
            before_id,
            limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    data = [
        {
            "event_id": r["event_id"],
            "account": r["account"],
            "event_type": r["event_type"],
            "created": rfc3339(datetime.fromtimestamp(int(r["created_ms"]) / 1000, UTC)),
            "processed_at": plain_row(r)["processed_at"],
        }
        for r in rows
    ]
    next_cursor = encode_cursor(int(rows[-1]["created_ms"]), rows[-1]["event_id"]) if more else None
    return Page(data, next_cursor)
