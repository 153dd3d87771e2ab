"""The PostgreSQL connection: an external server from PROCESSOR_DATABASE_URL, or a private embedded one
(processor.db.embedded).
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from processor.db import migrate
from processor.db.embedded import start_embedded_server
from processor.db.tls import plaintext_warning
from processor.errors import DatabaseUnavailable
from processor.settings import Settings

log = logging.getLogger(__name__)

#: what a failing or lost database raises through asyncpg. InternalClientError is among them: a connection whose
#: statement was cut short (a terminated backend, a cancelled query) can refuse the next one with it
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

#: a plain connection or one borrowed from a pool: every query helper accepts both
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


class Database:
    """An asyncpg pool with a lifecycle: `async with Database(settings) as db: db.pool...`."""

    def __init__(self, settings: Settings, *, min_size: int = 1, max_size: int = 10) -> None:
        self.settings = settings
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self.embedded = settings.database_url is None
        self.dsn = ""

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("Database.start() was not called")
        return self._pool

    async def start(self, *, upgrade: bool = False) -> Database:
        """Connect (starting the embedded server if needed); with `upgrade`, apply pending migrations."""
        if self._pool is not None:
            return self
        if self.settings.database_url is not None:
            self.dsn = self.settings.database_url.reveal()
            if warning := plaintext_warning(self.dsn):
                log.warning(warning)
        else:
            self.dsn = await asyncio.to_thread(start_embedded_server, self.settings.data_dir)
        self._pool = await self._create_pool(self.min_size, self.max_size)
        if upgrade:
            async with self.pool.acquire() as conn:
                await migrate.upgrade(conn)
        return self

    async def separate_pool(self, *, max_size: int) -> asyncpg.Pool:
        """A second pool on the same server, for a part whose connections nobody else may take; the caller
        closes it."""
        return await self._create_pool(1, max_size)

    async def _create_pool(self, min_size: int, max_size: int) -> asyncpg.Pool:
        try:
            return await asyncpg.create_pool(self.dsn, min_size=min_size, max_size=max_size)
        except (OSError, asyncpg.PostgresError) as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    async def dedicated_connection(self) -> asyncpg.Connection:
        """One connection outside the pool (for a session-level lock held while the pool is used); the caller
        closes it."""
        try:
            return await asyncpg.connect(self.dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    async def stop(self) -> None:
        """Close the pool. Safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> Database:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
