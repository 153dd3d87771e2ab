"""A relay that lost its lease while its publish was in flight cannot land a stale snapshot (issue 15, defect 2).

Relay 1 takes the lease and stalls mid-publish (an asyncio.Event holds it); its lease session is terminated from
another session; relay 2 takes over and publishes the same snapshot and a newer one; relay 1 resumes. Its write
must fail or stay invisible, so the last sandbox.state record of the sandbox is the newest version, as a new
service bootstrapping from the compacted topic would see it. On the real broker and on real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTP

from processor import constants
from processor.db.pool import Database
from processor.errors import DatabaseUnavailable, Fenced, LogUnavailable
from processor.eventlog.base import EventLog, FencedPublisher, Headers, Published
from processor.eventlog.kafka.log import KafkaEventLog
from processor.lifecycle.messages import SNAPSHOT_CONTENT_TYPE, state_snapshot
from processor.lifecycle.state import State
from processor.outbox.relay import RELAY_LOCK_ID, OutboxRelay
from tests.support.lifecycle_harness import read_topic
from tests.support.schemas import validate

SANDBOX = "sbx_fenced"


class Stall:
    """Holds the first caller at `reached` until the test sets `resume`."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.resume = asyncio.Event()
        self._used = False

    async def __call__(self) -> None:
        if not self._used:
            self._used = True
            self.reached.set()
            await self.resume.wait()


class StallingPublisher:
    """A fenced publisher whose first write stalls before it reaches the log."""

    def __init__(self, inner: FencedPublisher, stall: Stall) -> None:
        self.inner = inner
        self._stall = stall

    async def claim(self) -> None:
        await self.inner.claim()

    async def publish_many(self, records: Sequence[tuple[str, bytes | None, bytes, Headers]]) -> list[Published]:
        await self._stall()
        return await self.inner.publish_many(records)

    async def close(self) -> None:
        await self.inner.close()


class StallingLog:
    """The log as relay 1 sees it: its first publish stalls (whichever way the relay writes)."""

    def __init__(self, log: EventLog, stall: Stall) -> None:
        self._log = log
        self.stall = stall
        self.publishers: list[StallingPublisher] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    async def publish_many(self, records: Sequence[tuple[str, bytes | None, bytes, Headers]]) -> list[Published]:
        await self.stall()
        return await self._log.publish_many(records)

    def fenced_publisher(self, role: str) -> StallingPublisher:
        publisher = StallingPublisher(self._log.fenced_publisher(role), self.stall)
        self.publishers.append(publisher)
        return publisher


async def add_snapshot(pool: asyncpg.Pool, topic: str, version: int) -> None:
    """Commit an outbox row with snapshot `version` of SANDBOX, as the consumer's transaction does."""
    state = [State.UNCLAIMED, State.CLAIMED][version - 1]
    value = state_snapshot(SANDBOX, state, version=version, updated_at=datetime.now(UTC))
    headers = {"content-type": SNAPSHOT_CONTENT_TYPE, constants.H_STATE_VERSION: str(version)}
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbox (topic, key, value, headers, message_id) VALUES ($1, $2, $3, $4::jsonb, $5)",
            topic, SANDBOX.encode(), json.dumps(value).encode(), json.dumps(headers), f"{SANDBOX}:v{version}",
        )


async def terminate_lease_session(pool: asyncpg.Pool) -> None:
    """Kill the session holding the relay's lease, from another session (a dropped connection, a failover)."""
    async with pool.acquire() as conn:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objid = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            RELAY_LOCK_ID,
        )
    assert killed == 1


async def publish_when_leading(relay: OutboxRelay, timeout_s: float = 60.0) -> int:
    """relay.publish_once() as soon as the lease is free (the terminated session's lock goes with its exit)."""
    async with asyncio.timeout(timeout_s):
        # the lease frees when PostgreSQL has ended the killed session: nothing to wait on but a retry, as relays do
        while (count := await relay.publish_once()) < 0:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return count


async def state_versions(log: EventLog, topic: str) -> list[int]:
    """The versions of SANDBOX's sandbox.state records in log order, as a read_committed reader sees them."""
    versions = []
    for record in await read_topic(log, topic):
        value = json.loads(record.value)
        validate("sandbox-state", value)
        assert record.header(constants.H_STATE_VERSION) == str(value["version"])
        versions.append(value["version"])
    return versions


async def run_takeover(log: EventLog, db: Database, topic: str, role: str) -> BaseException | None:
    """Relay 1 stalls mid-publish and loses its lease, relay 2 publishes v1 and v2, relay 1 resumes; what relay 1
    raised (None if its publish succeeded)."""
    stalling = StallingLog(log, Stall())
    relay1 = OutboxRelay(cast(EventLog, stalling), db, role=role)
    relay2 = OutboxRelay(log, db, role=role)
    await add_snapshot(db.pool, topic, 1)
    first = asyncio.create_task(relay1.publish_once())
    try:
        async with asyncio.timeout(60):
            await stalling.stall.reached.wait()
        await terminate_lease_session(db.pool)
        await add_snapshot(db.pool, topic, 2)
        assert await publish_when_leading(relay2) == 2  # the row relay 1 was publishing, and the newer one
        stalling.stall.resume.set()
        outcome = (await asyncio.gather(first, return_exceptions=True))[0]
    finally:
        stalling.stall.resume.set()
        await asyncio.gather(first, return_exceptions=True)
        await relay1.close()
        await relay2.close()
    return outcome if isinstance(outcome, BaseException) else None


@pytest.fixture(params=["postgres", "kafka"])
def event_log(request: pytest.FixtureRequest) -> EventLog:
    """Each fencing test runs once per backend (the relay's database is PostgreSQL in both)."""
    log: EventLog = request.getfixturevalue("pg_log" if request.param == "postgres" else "kafka_log")
    return log


async def test_relay_that_lost_its_lease_mid_publish_cannot_land_a_stale_snapshot(
    event_log: EventLog, database: Database
) -> None:
    """The last sandbox.state record is the newest version; the deposed relay's write fails and lands nothing."""
    log = event_log
    topic = f"fencing-{uuid.uuid4().hex[:8]}.{constants.TOPIC_STATE}"
    await log.ensure_topics([topic], partitions=1)

    raised = await run_takeover(log, database, topic, role=f"{topic}.relay")

    assert await state_versions(log, topic) == [1, 2]
    assert isinstance(raised, Fenced), raised
    async with database.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def test_records_of_a_fenced_relays_transaction_are_invisible_to_read_committed_readers(
    kafka_log: KafkaEventLog, kafka_bootstrap: str, database: Database
) -> None:
    """On Kafka the deposed relay's records may already be in the partition when it stalls before committing:
    the new relay's claim aborts that transaction, so read_committed readers (ours, downstream's) never see them,
    while a read_uncommitted reader would have seen the stale snapshot last."""
    topic = f"fencing-{uuid.uuid4().hex[:8]}.{constants.TOPIC_STATE}"
    await kafka_log.ensure_topics([topic], partitions=1)
    stall = Stall()
    original_fenced_publisher = kafka_log.fenced_publisher

    def publisher_stalling_before_commit(role: str) -> Any:
        publisher = original_fenced_publisher(role)
        original_claim = publisher.claim

        async def claim() -> None:
            await original_claim()
            producer = publisher._producer  # the stall goes between the sends and the commit
            assert producer is not None
            commit = producer.commit_transaction

            async def stalled_commit() -> None:
                await stall()
                await commit()

            producer.commit_transaction = stalled_commit  # type: ignore[method-assign]

        publisher.claim = claim  # type: ignore[method-assign]
        return publisher

    relay1 = OutboxRelay(kafka_log, database, role=f"{topic}.relay")
    relay1.publisher = publisher_stalling_before_commit(f"{topic}.relay")  # its records go out, its commit waits
    relay2 = OutboxRelay(kafka_log, database, role=f"{topic}.relay")
    await add_snapshot(database.pool, topic, 1)
    first = asyncio.create_task(relay1.publish_once())
    try:
        async with asyncio.timeout(60):
            await stall.reached.wait()
        await terminate_lease_session(database.pool)
        await add_snapshot(database.pool, topic, 2)
        assert await publish_when_leading(relay2) == 2
        stall.resume.set()
        raised = (await asyncio.gather(first, return_exceptions=True))[0]
    finally:
        stall.resume.set()
        await asyncio.gather(first, return_exceptions=True)
        await relay1.close()
        await relay2.close()

    assert isinstance(raised, Fenced | LogUnavailable | DatabaseUnavailable), raised
    assert await state_versions(kafka_log, topic) == [1, 2]
    assert await uncommitted_versions(kafka_bootstrap, topic) == [1, 1, 2]  # the aborted v1 is in the log


async def uncommitted_versions(bootstrap: str, topic: str) -> list[int]:
    """What a reader that ignores transactions sees: every record, aborted ones included."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_uncommitted")
    await consumer.start()
    try:
        tp = KafkaTP(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        end = (await consumer.end_offsets([tp]))[tp]
        versions: list[int] = []
        while await consumer.position(tp) < end:
            for message in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                versions.append(json.loads(message.value)["version"])
        return versions
    finally:
        await consumer.stop()
