"""A small ordered-SQL migration runner: versioned, re-runnable, safe when several processes upgrade at once."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from processor.db.pool import Connection

_MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")
#: an arbitrary constant: the advisory lock that serialises concurrent upgraders
_LOCK_ID = 0x5A4D_0001

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path


def available() -> list[Migration]:
    """Every migration shipped with this processor, in version order."""
    found = []
    for path in _MIGRATIONS_DIR.glob("*.sql"):
        match = _NAME.match(path.name)
        if match is None:
            raise RuntimeError(f"migration file {path.name} does not match NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {_MIGRATIONS_DIR}")
    return found


async def upgrade(conn: Connection) -> list[Migration]:
    """Apply every migration not applied yet; return the ones applied now."""
    applied_now: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in available():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version, migration.name,
                )
            log.info("applied migration %04d_%s", migration.version, migration.name)
            applied_now.append(migration)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now


async def current_version(conn: Connection) -> int:
    """The highest applied version, 0 for an empty database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))
