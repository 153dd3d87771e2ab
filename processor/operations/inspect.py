"""Read-only views of the lifecycle store for operators: one sandbox in full, or sandboxes by state and age."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from processor.db.pool import Database
from processor.paging import InvalidCursor, Page, decode_cursor, page_of, parse_limit
from processor.timestamps import rfc3339

#: history rows and processed events `sandbox show` prints by default
DEFAULT_LAST = 20
#: sandboxes per page of `sandbox list` and GET /v1/ops/sandboxes unless asked otherwise
DEFAULT_SANDBOX_PAGE = 100


def _plain(value: Any) -> Any:
    """A database value as JSON-able data."""
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, str | bytes) and value[:1] in ("{", b"{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def plain_row(record: asyncpg.Record, *skip: str) -> dict[str, Any]:
    """A database row as JSON-able data (times in RFC 3339, JSON columns parsed), without the `skip` columns."""
    return {key: _plain(value) for key, value in record.items() if key not in skip}


async def show_sandbox(
    db: Database, sandbox_id: str, *, last: int = DEFAULT_LAST, before: int | None = None
) -> dict[str, Any] | None:
    """State, a page of history (the `last` rows before history id `before`, oldest first), recent events and
    anomalies of one sandbox; None if we do not know it. `history_next` is the `before` of the older page."""
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM sandboxes WHERE id = $1", sandbox_id)
        if row is None:
            return None
        history = await conn.fetch(
            "SELECT id, kind, from_state, to_state, observed, sequence, event_id, event_type, reason,"
            " occurred_at, recorded_at FROM sandbox_history WHERE sandbox_id = $1"
            " AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            sandbox_id,
            before,
            last + 1,
        )
        events = await conn.fetch(
            "SELECT event_id, event_type, outcome, processed_at FROM processed_events WHERE sandbox_id = $1"
            " ORDER BY processed_at DESC, event_id LIMIT $2",
            sandbox_id,
            last,
        )
        anomalies = await conn.fetch(
            "SELECT event_id, current_state, observed_state, reason, recorded_at FROM anomalies"
            " WHERE sandbox_id = $1 ORDER BY id",
            sandbox_id,
        )
        pending = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE key = $1 AND published_at IS NULL", sandbox_id.encode()
        )
    page = list(reversed(history[:last]))
    return {
        "sandbox": plain_row(row),
        "history": [plain_row(h) for h in page],
        "history_next": page[0]["id"] if len(history) > last else None,
        "last_events": [plain_row(e) for e in events],
        "anomalies": [plain_row(a) for a in anomalies],
        "outbox_pending": int(pending),
    }


async def list_sandboxes(
    db: Database,
    *,
    state: str | None = None,
    stuck_for: timedelta | None = None,
    limit: int = DEFAULT_SANDBOX_PAGE,
    cursor: str | None = None,
) -> Page:
    """A page of sandboxes in id order in `state` and/or not updated for `stuck_for` (None matches any)."""
    parse_limit(limit, DEFAULT_SANDBOX_PAGE)
    after = decode_cursor(cursor, 1)[0] if cursor else ""
    if not isinstance(after, str):
        raise InvalidCursor()
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, state, sequence, flags, last_event_id, created_at, updated_at FROM sandboxes"
            " WHERE ($1::text IS NULL OR state = $1) AND ($2::interval IS NULL OR updated_at < now() - $2)"
            " AND id > $3 ORDER BY id LIMIT $4",
            state,
            stuck_for,
            after,
            limit + 1,
        )
    page, next_cursor = page_of(rows, limit, lambda r: (r["id"],))
    return Page([plain_row(r) for r in page], next_cursor)


#: states a sandbox can be stuck in: every state but the final ones
OPEN_STATES = ("unclaimed", "claimed", "pending_onboarding", "pending_install", "installed")


async def stuck_sandboxes(
    db: Database, *, states: tuple[str, ...] = OPEN_STATES, older_than: timedelta, limit: int = 100
) -> list[dict[str, Any]]:
    """Sandboxes in one of `states` that entered it more than `older_than` ago, longest waiting first.

    The time in a state is read from the transition that entered it (each state is entered once); a sandbox
    registered without one counts from its creation. Rows carry `entered_at` and the `stripe` fields of the
    last fetch (status, app_install_status, expiry) next to the sandbox's own columns."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT s.id, s.state, s.sequence, s.flags, s.stripe, s.created_at, s.updated_at,"
            " coalesce(h.occurred_at, h.recorded_at, s.created_at) AS entered_at"
            " FROM sandboxes s LEFT JOIN sandbox_history h ON h.sandbox_id = s.id AND h.kind = 'transition'"
            " AND h.to_state = s.state"
            " WHERE s.state = ANY($1::text[])"
            " AND coalesce(h.occurred_at, h.recorded_at, s.created_at) < now() - $2::interval"
            " ORDER BY entered_at, s.id LIMIT $3",
            list(states),
            older_than,
            limit,
        )
    return [plain_row(r) for r in rows]
