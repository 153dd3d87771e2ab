"""The sandbox API's queries: create requests, one sandbox with its history, pages of sandboxes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from processor.lifecycle import State
from processor.paging import InvalidCursor, Page, decode_cursor, page_of


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A row of sandbox_create_requests."""

    fingerprint: str
    sandbox_id: str | None
    completed_at: datetime | None


def decode_sandbox_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of the last sandbox of the page a cursor of `ApiStore.page` ends; InvalidCursor else."""
    created, sandbox_id = decode_cursor(cursor, 2)
    try:
        at = datetime.fromisoformat(str(created))
    except ValueError:
        raise InvalidCursor() from None
    if not isinstance(sandbox_id, str) or at.tzinfo is None:
        raise InvalidCursor()
    return at, sandbox_id


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


class ApiStore:
    """Queries on the lifecycle tables (read-only) and on sandbox_create_requests."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def begin_create(self, stripe_key: str, fingerprint: str) -> tuple[CreateRequest, bool]:
        """The request row for `stripe_key`, inserted if new; the flag says whether it existed before."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "INSERT INTO sandbox_create_requests (stripe_key, fingerprint) VALUES ($1, $2)"
                " ON CONFLICT (stripe_key) DO NOTHING RETURNING fingerprint, sandbox_id, completed_at",
                stripe_key,
                fingerprint,
            )
            existed = row is None
            if row is None:
                row = await conn.fetchrow(
                    "SELECT fingerprint, sandbox_id, completed_at FROM sandbox_create_requests WHERE stripe_key = $1",
                    stripe_key,
                )
        if row is None:  # rows are never deleted, so only a concurrent DROP could get here
            raise RuntimeError("sandbox_create_requests row vanished")
        return CreateRequest(row["fingerprint"], row["sandbox_id"], row["completed_at"]), existed

    async def complete_create(self, stripe_key: str, sandbox_id: str) -> None:
        await self.pool.execute(
            "UPDATE sandbox_create_requests SET sandbox_id = $2, completed_at = coalesce(completed_at, now())"
            " WHERE stripe_key = $1",
            stripe_key,
            sandbox_id,
        )

    async def state(self, sandbox_id: str) -> State | None:
        value = await self.pool.fetchval("SELECT state FROM sandboxes WHERE id = $1", sandbox_id)
        return None if value is None else State(value)

    async def sandbox(self, sandbox_id: str) -> dict[str, Any] | None:
        """The sandbox with its full history and anomalies, as GET /v1/sandboxes/{id} shows it."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM sandboxes WHERE id = $1", sandbox_id)
            if row is None:
                return None
            history = await conn.fetch(
                "SELECT kind, from_state, to_state, observed, sequence, event_id, event_type, reason,"
                " occurred_at, recorded_at FROM sandbox_history WHERE sandbox_id = $1 ORDER BY id",
                sandbox_id,
            )
            anomalies = await conn.fetch(
                "SELECT event_id, current_state, observed_state, reason, recorded_at FROM anomalies"
                " WHERE sandbox_id = $1 ORDER BY id",
                sandbox_id,
            )
        return {
            **summary(row),
            "sequence": row["sequence"],
            "version": row["version"],
            "last_event_id": row["last_event_id"],
            "history": [dict(h) for h in history],
            "anomalies": [dict(a) for a in anomalies],
        }

    async def page(self, state: State | None, cursor: str | None, limit: int) -> Page:
        """Up to `limit` sandboxes newest first after the `cursor` of the previous page."""
        after = decode_sandbox_cursor(cursor) if cursor else None
        rows = await self.pool.fetch(
            "SELECT * FROM sandboxes"
            " WHERE ($1::text IS NULL OR state = $1)"
            " AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))"
            " ORDER BY created_at DESC, id DESC LIMIT $4",
            None if state is None else str(state),
            None if after is None else after[0],
            None if after is None else after[1],
            limit + 1,
        )
        page, next_cursor = page_of(rows, limit, lambda r: (r["created_at"].isoformat(), r["id"]))
        return Page([summary(r) for r in page], next_cursor)


def summary(row: asyncpg.Record) -> dict[str, Any]:
    """The fields of a sandbox that every answer shows."""
    return {
        "id": row["id"],
        "object": "sandbox",
        "state": row["state"],
        "flags": _json(row["flags"]),
        "stripe": _json(row["stripe"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
