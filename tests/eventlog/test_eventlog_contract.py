"""One contract, two backends: the Kafka log and the PostgreSQL-table log must behave the same."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from processor.eventlog.base import EventLog, LogConsumer, Record, TopicPartition
from processor.eventlog.kafka.log import KafkaEventLog
from processor.eventlog.postgres.log import PostgresEventLog

#: run as a separate process that commits part of a batch and waits to be SIGKILLed
KILLABLE_CONSUMER = Path(__file__).resolve().parents[1] / "support" / "killable_consumer.py"
PARTITIONS = 4


@dataclass
class Backend:
    name: str
    log: EventLog
    address: str  # what another process needs to open the same log (DSN or bootstrap servers)

    async def topic(self) -> str:
        name = f"contract-{uuid.uuid4().hex[:8]}"
        await self.log.ensure_topics([name], partitions=PARTITIONS)
        return name


@pytest_asyncio.fixture
async def plain_kafka_log(kafka_bootstrap: str) -> AsyncIterator[KafkaEventLog]:
    async with KafkaEventLog([kafka_bootstrap]) as log:
        yield log


@pytest.fixture(params=["postgres", "kafka"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each contract test runs once per backend."""
    if request.param == "postgres":
        pg_log: PostgresEventLog = request.getfixturevalue("pg_log")
        return Backend("postgres", pg_log, request.getfixturevalue("pg_dsn"))
    kafka_log: KafkaEventLog = request.getfixturevalue("plain_kafka_log")
    return Backend("kafka", kafka_log, request.getfixturevalue("kafka_bootstrap"))


async def drain(consumer: LogConsumer, want: int, timeout_s: float = 30.0) -> list[Record]:
    """Poll until `want` records arrived or the timeout passed."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(await consumer.poll(max_records=500, timeout_s=0.5))
    return got


def next_offsets(records: list[Record]) -> dict[TopicPartition, int]:
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        offsets[record.tp] = max(offsets.get(record.tp, 0), record.offset + 1)
    return offsets


async def test_publish_is_durable_and_ordered_per_key(backend: Backend) -> None:
    """Records of one key come back in the order they were published, with their key and headers."""
    topic = await backend.topic()
    keys = [f"sandbox_{i}".encode() for i in range(10)]
    sent = [(topic, keys[i % 10], f"{i}".encode(), [("n", str(i).encode())]) for i in range(300)]
    published = await backend.log.publish_many(sent[:150])
    published += [await backend.log.publish(*record) for record in sent[150:]]
    assert len({(p.partition, p.offset) for p in published}) == 300

    async with backend.log.consumer(f"g-{uuid.uuid4().hex[:6]}", [topic]) as consumer:
        records = await drain(consumer, 300)
    assert len(records) == 300
    by_key: dict[bytes | None, list[int]] = defaultdict(list)
    for record in records:
        assert record.header("n") == record.value.decode()
        by_key[record.key].append(int(record.value))
    for key in keys:
        values = by_key[key]
        assert values == sorted(values) and len(values) == 30, key
    # a key always maps to one partition
    partitions_per_key = defaultdict(set)
    for record in records:
        partitions_per_key[record.key].add(record.partition)
    assert all(len(parts) == 1 for parts in partitions_per_key.values())


async def test_concurrent_publishes_report_where_each_record_landed(backend: Backend) -> None:
    """Hundreds of publish() calls in flight at once (the ingress's load) each return the partition and offset
    of their own record, and records of one key keep the order their calls were made in."""
    topic = await backend.topic()
    keys = [f"acct_{i}".encode() for i in range(5)]
    calls = [backend.log.publish(topic, keys[i % 5], f"{i}".encode(), [("n", str(i).encode())]) for i in range(500)]
    published = await asyncio.gather(*calls)
    async with backend.log.consumer(f"g-{uuid.uuid4().hex[:6]}", [topic]) as consumer:
        records = await drain(consumer, 500)
    landed = {(r.partition, r.offset): int(r.value) for r in records}
    assert [landed[p.partition, p.offset] for p in published] == list(range(500))
    for key in keys:
        values = [int(r.value) for r in sorted(records, key=lambda r: r.offset) if r.key == key]
        assert values == sorted(values) and len(values) == 100


async def test_restarted_consumer_resumes_after_last_commit(backend: Backend) -> None:
    """Nothing committed is read twice and nothing uncommitted is lost when a consumer restarts."""
    topic = await backend.topic()
    await backend.log.publish_many([(topic, f"k{i}".encode(), f"{i}".encode(), ()) for i in range(100)])
    group = f"g-{uuid.uuid4().hex[:6]}"
    async with backend.log.consumer(group, [topic]) as first:
        records = await drain(first, 100)
        assert len(records) == 100
        committed = [r for r in records if r.offset < 10]  # commit only the first 10 of each partition
        await first.commit(next_offsets(committed))
    async with backend.log.consumer(group, [topic]) as second:
        again = await drain(second, 100 - len(committed), timeout_s=20)
        extra = await second.poll(timeout_s=0.5)
    assert sorted(int(r.value) for r in committed + again) == list(range(100))
    assert extra == []


async def test_uncommitted_records_are_redelivered_after_kill(backend: Backend) -> None:
    """A consumer SIGKILLed mid-batch loses nothing: a new member gets every uncommitted record."""
    topic = await backend.topic()
    await backend.log.publish_many([(topic, f"k{i}".encode(), f"{i}".encode(), ()) for i in range(200)])
    group = f"g-{uuid.uuid4().hex[:6]}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(KILLABLE_CONSUMER), backend.name, backend.address, topic, group, "50",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith("COMMITTED"), line
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    committed = {int(p): int(o) for p, o in (item.split(":") for item in line.split()[1].split(","))}
    assert sum(committed.values()) == 50

    async with backend.log.consumer(group, [topic], session_timeout_s=6.0) as survivor:
        records = await drain(survivor, 150, timeout_s=60)
    assert len(records) == 150
    for record in records:
        assert record.offset >= committed.get(record.partition, 0)


async def test_two_members_split_partitions(backend: Backend) -> None:
    """Two consumers of one group own disjoint partitions and together read every record once."""
    topic = await backend.topic()
    group = f"g-{uuid.uuid4().hex[:6]}"
    a = backend.log.consumer(group, [topic])
    b = backend.log.consumer(group, [topic])
    await a.start()
    await b.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await asyncio.gather(a.poll(timeout_s=0.2), b.poll(timeout_s=0.2))
            if a.assignment() and b.assignment() and len(a.assignment() | b.assignment()) == PARTITIONS:
                break
        assert a.assignment().isdisjoint(b.assignment())
        assert len(a.assignment()) == len(b.assignment()) == PARTITIONS // 2

        await backend.log.publish_many([(topic, f"k{i}".encode(), f"{i}".encode(), ()) for i in range(200)])
        got_a: list[Record] = []
        got_b: list[Record] = []
        deadline = time.monotonic() + 30
        while len(got_a) + len(got_b) < 200 and time.monotonic() < deadline:
            batch_a, batch_b = await asyncio.gather(a.poll(timeout_s=0.3), b.poll(timeout_s=0.3))
            got_a += batch_a
            got_b += batch_b
        assert {r.tp for r in got_a} <= a.assignment()
        assert {r.tp for r in got_b} <= b.assignment()
        assert sorted(int(r.value) for r in got_a + got_b) == list(range(200))
        assert got_a and got_b
    finally:
        await a.stop()
        await b.stop()


async def test_replay_from_offset_and_from_time(backend: Backend) -> None:
    """A consumer can seek back to an offset, or to the first record at or after a timestamp."""
    topic = await backend.topic()
    key = b"one-key"  # one partition, so offsets are 0..n-1
    await backend.log.publish_many([(topic, key, f"early-{i}".encode(), ()) for i in range(20)])
    await asyncio.sleep(0.05)
    boundary_ms = time.time_ns() // 1_000_000
    await asyncio.sleep(0.05)
    await backend.log.publish_many([(topic, key, f"late-{i}".encode(), ()) for i in range(10)])

    async with backend.log.consumer(f"g-{uuid.uuid4().hex[:6]}", [topic]) as consumer:
        records = await drain(consumer, 30)
        await consumer.commit(next_offsets(records))
        tp = records[0].tp
        assert [r.offset for r in records] == list(range(30))

        await consumer.seek(tp, 25)
        replayed = await drain(consumer, 5)
        assert [r.value for r in replayed] == [f"late-{i}".encode() for i in range(5, 10)]

        offsets = await consumer.offsets_for_time(boundary_ms)
        assert offsets[tp] == 20
        await consumer.seek(tp, offsets[tp])
        replayed = await drain(consumer, 10)
        assert [r.value for r in replayed] == [f"late-{i}".encode() for i in range(10)]
        assert await consumer.committed(tp) == 30

    assert [r.value for r in await backend.log.read(tp, 18, 22)] == [
        b"early-18", b"early-19", b"late-0", b"late-1"]
    assert (await backend.log.end_offsets(topic))[tp] == 30
