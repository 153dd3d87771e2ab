"""`processor db upgrade|status`: schema migrations."""

from __future__ import annotations

import argparse
import asyncio

from processor.db import migrate
from processor.db.pool import Database
from processor.settings import Settings


async def upgrade(settings: Settings) -> list[migrate.Migration]:
    """Apply pending migrations to the configured (or embedded) database."""
    async with Database(settings, max_size=1) as db, db.pool.acquire() as conn:
        return await migrate.upgrade(conn)


async def status(settings: Settings) -> tuple[int, int]:
    """(applied version, latest shipped version)."""
    async with Database(settings, max_size=1) as db, db.pool.acquire() as conn:
        return await migrate.current_version(conn), migrate.available()[-1].version


def _upgrade(args: argparse.Namespace) -> int:
    applied = asyncio.run(upgrade(Settings.from_env()))
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print(f"database is at version {migrate.available()[-1].version}")
    return 0


def _status(args: argparse.Namespace) -> int:
    current, latest = asyncio.run(status(Settings.from_env()))
    print(f"database version {current}, latest {latest}" + ("" if current == latest else " (upgrade pending)"))
    return 0 if current == latest else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("db", help="database schema migrations")
    commands = parser.add_subparsers(dest="db_command", required=True)
    commands.add_parser("upgrade", help="apply pending migrations (idempotent)").set_defaults(handler=_upgrade)
    commands.add_parser("status", help="show the schema version; exit 1 if behind").set_defaults(handler=_status)
