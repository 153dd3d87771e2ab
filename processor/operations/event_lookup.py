"""Id-level views of the events the processor handled: was event X processed, when, with which outcome, and
where it went (the history rows it wrote in each sandbox, anomalies, the DLQ); processed events page by page;
and the v1 account events no sandbox matches yet (they set a flag as soon as one does).

Lists are newest first and paged the one way every list is (`processor.paging`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.operations import dlq as dlq_ops
from processor.operations.inspect import plain_row
from processor.paging import InvalidCursor, Page, decode_cursor, page_of, parse_limit
from processor.settings import Settings
from processor.timestamps import rfc3339

#: rows per page unless asked otherwise
DEFAULT_PAGE = 50


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
    parse_limit(limit, DEFAULT_PAGE)
    before_at, before_id = None, None
    if cursor:
        at, before_id = decode_cursor(cursor, 2)
        try:
            before_at = datetime.fromisoformat(str(at))
        except ValueError:
            raise InvalidCursor() from None
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
            str(before_id) if before_id is not None else None,
            limit + 1,
        )
    # the cursor keeps the database's microseconds: an RFC 3339 rendering with milliseconds would skip rows
    page, next_cursor = page_of(rows, limit, lambda r: (r["processed_at"].isoformat(), r["event_id"]))
    return Page([plain_row(r) for r in page], next_cursor)


async def unmatched_account_events(db: Database, *, limit: int = DEFAULT_PAGE, cursor: str | None = None) -> Page:
    """v1 account events whose account no sandbox has (yet), newest first: flags waiting for their sandbox."""
    parse_limit(limit, DEFAULT_PAGE)
    before_ms, before_id = decode_cursor(cursor, 2) if cursor else (None, None)
    if before_ms is not None and not isinstance(before_ms, int):
        raise InvalidCursor()
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT a.event_id, a.account, a.event_type, a.created_ms, p.processed_at FROM account_events a"
            " LEFT JOIN processed_events p USING (event_id)"
            " WHERE NOT EXISTS (SELECT 1 FROM sandboxes s WHERE s.sandbox_account = a.account"
            " OR s.owner_account = a.account)"
            " AND ($1::bigint IS NULL OR (a.created_ms, a.event_id) < ($1, $2::text))"
            " ORDER BY a.created_ms DESC, a.event_id DESC LIMIT $3",
            before_ms,
            str(before_id) if before_id is not None else None,
            limit + 1,
        )
    page, next_cursor = page_of(rows, limit, lambda r: (int(r["created_ms"]), r["event_id"]))
    data = [
        {
            "event_id": r["event_id"],
            "account": r["account"],
            "event_type": r["event_type"],
            "created": rfc3339(datetime.fromtimestamp(int(r["created_ms"]) / 1000, UTC)),
            "processed_at": plain_row(r)["processed_at"],
        }
        for r in page
    ]
    return Page(data, next_cursor)
