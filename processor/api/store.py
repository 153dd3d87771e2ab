"""The sandbox API's queries: create requests, one sandbox with its history, pages of sandboxes."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from processor.lifecycle import State


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A row of sandbox_create_requests."""

    fingerprint: str
    sandbox_id: str | None
    completed_at: datetime | None


class InvalidCursor(ValueError):
    """A `cursor` query parameter that is not one this API handed out."""


def encode_cursor(created_at: datetime, sandbox_id: str) -> str:
    """An opaque cursor naming the last sandbox of a page."""
    raw = orjson.dumps([created_at.isoformat(), sandbox_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, sandbox_id = orjson.loads(raw)
        at = datetime.fromisoformat(created)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidCursor(cursor) from None
    if not isinstance(sandbox_id, str) or at.tzinfo is None:
        raise InvalidCursor(cursor)
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

    async def page(
        self, state: State | None, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Up to `limit` sandboxes newest first after the cursor position, and the cursor of the next page."""
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
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
        return [summary(r) for r in rows], cursor


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
