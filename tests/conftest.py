"""Real services for the whole test session: one Kafka broker and one PostgreSQL server, started once.

A test that needs a service and cannot get it errors loudly; nothing is skipped. Set
PROCESSOR_TEST_KAFKA_BOOTSTRAP or PROCESSOR_TEST_DATABASE_URL to use servers you run yourself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from processor import constants
from processor.db import migrate
from processor.db.embedded import start_embedded_server, stop_embedded_server
from processor.db.pool import Database
from processor.dev.kafka import KafkaBroker
from processor.eventlog.kafka.log import KafkaEventLog
from processor.eventlog.postgres.log import PostgresEventLog
from processor.settings import Secret, Settings

#: a dead consumer loses its partitions this fast in the PostgreSQL log under test
PG_SESSION_TIMEOUT_S = 2.0


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# --- Kafka -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def service_dir() -> Iterator[Path]:
    """A private directory for the session's servers. Not under pytest's tmp_path: pytest prunes old base
    temp dirs, which would delete a running server's data when several pytest sessions run at once."""
    path = Path(tempfile.mkdtemp(prefix="processor-tests-"))
    path.chmod(0o755)  # the embedded PostgreSQL runs as an unprivileged user when we are root
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(service_dir: Path) -> Iterator[str]:
    """The bootstrap address of the session's real Kafka broker."""
    external = os.environ.get("PROCESSOR_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = KafkaBroker(service_dir / "kafka")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.destroy()


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of this test's own, which the test may stop and restart (fault tests)."""
    broker = KafkaBroker(tmp_path / "kafka")
    broker.start()
    try:
        yield broker
    finally:
        broker.destroy()


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> Settings:
    """Settings pointing at the session broker, with a topic prefix no other test uses."""
    return Settings(kafka_bootstrap_servers=(kafka_bootstrap,), topic_prefix=unique("t") + ".")


@pytest_asyncio.fixture
async def kafka_log(kafka_settings: Settings) -> AsyncIterator[KafkaEventLog]:
    """A started Kafka event log whose four topics (under the test's prefix) exist."""
    log = KafkaEventLog(kafka_settings.kafka_bootstrap_servers)
    async with log:
        await log.ensure_topics([kafka_settings.topic(name) for name in constants.ALL_TOPICS])
        yield log


# --- PostgreSQL ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_server_dsn(service_dir: Path) -> Iterator[str]:
    """DSN of the session's real PostgreSQL server (its maintenance database)."""
    external = os.environ.get("PROCESSOR_TEST_DATABASE_URL")
    if external:
        yield external
        return
    yield start_embedded_server(service_dir)
    stop_embedded_server(service_dir)  # before service_dir is deleted


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest_asyncio.fixture
async def pg_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test; dropped afterwards."""
    name = unique("test_")
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = with_database(pg_server_dsn, name)
        conn = await asyncpg.connect(dsn)
        try:
            await migrate.upgrade(conn)
        finally:
            await conn.close()
        yield dsn
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def pg_settings(pg_dsn: str) -> Settings:
    """Settings for the embedded-log deployment on this test's database."""
    return Settings(database_url=Secret(pg_dsn), topic_prefix=unique("t") + ".")


@pytest_asyncio.fixture
async def database(pg_settings: Settings) -> AsyncIterator[Database]:
    async with Database(pg_settings) as db:
        yield db


@pytest_asyncio.fixture
async def pg_log(database: Database) -> AsyncIterator[PostgresEventLog]:
    """A started PostgreSQL-table event log on this test's database."""
    log = PostgresEventLog(database.pool, partitions=4, session_timeout_s=PG_SESSION_TIMEOUT_S)
    async with log:
        yield log
