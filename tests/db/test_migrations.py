"""Schema migrations are versioned and re-runnable."""

from __future__ import annotations

import asyncpg

from processor.db import migrate


async def test_upgrade_twice_is_a_no_op(pg_dsn: str) -> None:
    """A migrated database reports the latest version and a second upgrade applies nothing."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await migrate.current_version(conn) == migrate.available()[-1].version
        assert await migrate.upgrade(conn) == []
        versions = [m.version for m in migrate.available()]
        assert versions == sorted(set(versions)) and versions[0] == 1
    finally:
        await conn.close()
