"""Fenced writes on the PostgreSQL log: a role's generation in log_fences, checked where the write happens.

`claim` bumps the role's generation and commits at once, so it is visible to every writer. `publish_many` locks
the role's row FOR SHARE and compares the generation in the same transaction as the insert into log_records:
a holder whose generation is no longer the current one cannot write, and a claim that comes while a write is
checking waits for that write to commit, so the new holder's records always land after it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from processor.db.pool import DATABASE_ERRORS
from processor.errors import Fenced, LogUnavailable
from processor.eventlog.base import Headers, Published
from processor.eventlog.postgres.writer import Outgoing

if TYPE_CHECKING:
    from processor.eventlog.postgres.log import PostgresEventLog


class PostgresFencedPublisher:
    """The writes of one role (the outbox relay) on the PostgreSQL log; see the module docstring."""

    def __init__(self, log_: PostgresEventLog, role: str) -> None:
        self._log = log_
        self.role = role
        self._generation: int | None = None

    async def claim(self) -> None:
        """Become the role's only writer: every earlier holder is fenced from now on."""
        try:
            async with self._log.pool.acquire() as conn:
                self._generation = int(await conn.fetchval(
                    "INSERT INTO log_fences (role, generation) VALUES ($1, 1) ON CONFLICT (role)"
                    " DO UPDATE SET generation = log_fences.generation + 1 RETURNING generation",
                    self.role,
                ))
        except DATABASE_ERRORS as exc:
            raise LogUnavailable(f"cannot claim role {self.role!r} on the PostgreSQL log: {exc}") from exc

    async def publish_many(self, records: Sequence[tuple[str, bytes | None, bytes, Headers]]) -> list[Published]:
        """All `records` in one transaction, only while this holder's generation is the current one."""
        if self._generation is None:
            raise Fenced(f"role {self.role!r} is not claimed")
        now = time.time_ns() // 1_000_000
        batch = [Outgoing(topic, key, value, headers, now) for topic, key, value, headers in records]
        try:
            async with self._log.pool.acquire() as conn, conn.transaction():
                current = await conn.fetchval(
                    "SELECT generation FROM log_fences WHERE role = $1 FOR SHARE", self.role)
                if current != self._generation:
                    self._generation = None
                    raise Fenced(f"role {self.role!r} was claimed by another writer (generation {current})")
                return await self._log.append_in(conn, batch)
        except DATABASE_ERRORS as exc:
            raise LogUnavailable(f"event log write failed: {exc}") from exc

    async def close(self) -> None:
        """Forget the claim (safe to call twice); the role stays claimed until another holder claims it."""
        self._generation = None
