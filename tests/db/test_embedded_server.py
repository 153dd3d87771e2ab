"""The private PostgreSQL server stops when asked, so a directory can be deleted without leaving it running."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from processor.db.embedded import start_embedded_server, stop_embedded_server


async def test_stop_embedded_server_stops_it_before_its_directory_goes(tmp_path: Path) -> None:
    """After stop_embedded_server nothing answers on the server's address and its lock file is gone (the demo
    and the test session delete the directory next; the wheel's exit hook could no longer stop it then)."""
    await asyncio.to_thread(tmp_path.chmod, 0o755)  # the server runs unprivileged when we are root
    dsn = await asyncio.to_thread(start_embedded_server, tmp_path)
    conn = await asyncpg.connect(dsn)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()
    await asyncio.to_thread(stop_embedded_server, tmp_path)
    assert not await asyncio.to_thread((tmp_path / "postgres" / "postmaster.pid").exists)
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await asyncpg.connect(dsn, timeout=5)
    await asyncio.to_thread(stop_embedded_server, tmp_path)  # a second call is a no-op
