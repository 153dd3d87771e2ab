"""Batching logic of the Kafka producer path, against a fake producer (the broker-facing behaviour is in the
event-log contract suite)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from processor.errors import LogUnavailable
from processor.eventlog.kafka_batches import PartitionBatcher
from processor.eventlog.partitioner import choose_partition


class FakeProducer:
    """Hands out real batch builders; each send waits until the test acknowledges it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, int]] = []  # topic, partition, records
        self.pending: list[asyncio.Future[Any]] = []
        self.next_offset = 0

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1024 * 1024, 0)  # no compression

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, batch.record_count()))
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending.append(ack)
        return ack

    def acknowledge(self, records: int) -> None:
        ack = self.pending.pop(0)
        ack.set_result(type("Meta", (), {"offset": self.next_offset})())
        self.next_offset += records


def batcher_with(producer: FakeProducer) -> PartitionBatcher:
    return PartitionBatcher(producer, lambda exc: LogUnavailable(str(exc)))  # type: ignore[arg-type]


async def until(condition: Any) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def test_records_of_one_loop_iteration_share_a_batch_and_the_next_waits_for_the_ack() -> None:
    """Appends made together go out as one batch; later ones collect while it is in flight, then follow."""
    producer = FakeProducer()
    batcher = batcher_with(producer)
    first = [batcher.append("t", 0, b"k", b"%d" % i, []) for i in range(3)]
    await until(lambda: producer.sent)
    second = [batcher.append("t", 0, b"k", b"%d" % i, []) for i in range(3, 5)]
    await asyncio.sleep(0)
    assert producer.sent == [("t", 0, 3)]  # the second batch waits for the first's acknowledgement
    producer.acknowledge(3)
    await until(lambda: len(producer.sent) == 2)
    producer.acknowledge(2)
    assert await asyncio.gather(*first, *second) == [0, 1, 2, 3, 4]
    assert producer.sent == [("t", 0, 3), ("t", 0, 2)]


async def test_a_batch_nobody_waits_for_any_more_is_not_sent() -> None:
    """Callers that gave up (a deadline passed while the broker was slow) leave nothing to send late."""
    producer = FakeProducer()
    batcher = batcher_with(producer)
    kept = batcher.append("t", 0, b"k", b"kept", [])
    await until(lambda: producer.sent)
    abandoned = [batcher.append("t", 0, b"k", b"late", []) for _ in range(2)]
    for waiter in abandoned:
        waiter.cancel()
    after = batcher.append("t", 1, b"k", b"other partition", [])
    producer.acknowledge(1)
    await until(lambda: kept.done())
    await until(lambda: len(producer.sent) == 2)
    producer.acknowledge(1)
    assert await after == 1
    await batcher.flush()
    assert producer.sent == [("t", 0, 1), ("t", 1, 1)]


class FakeCluster:
    """aiokafka's ClusterMetadata as the batcher uses it: partitions per topic and update listeners."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.listeners: list[Any] = []

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.partitions)) if topic == "t" else None

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def update(self, partitions: int) -> None:
        self.partitions = partitions
        for listener in self.listeners:
            listener(self)


async def test_records_are_placed_by_the_partition_count_of_the_latest_metadata() -> None:
    """Kafka's default partitioner over the topic's current partitions; a topic that grew spreads wider."""
    producer = FakeProducer()
    cluster = FakeCluster(2)
    producer.client = type("Client", (), {"cluster": cluster})()  # type: ignore[attr-defined]
    batcher = batcher_with(producer)
    keys = [b"acct_%d" % i for i in range(50)]
    assert [batcher.place("t", key) for key in keys] == [choose_partition(key, 2) for key in keys]
    assert batcher.place("unknown", b"k") is None  # no metadata yet: the caller waits for it
    cluster.update(8)
    placed = [batcher.place("t", key) for key in keys]
    assert placed == [choose_partition(key, 8) for key in keys]
    assert max(placed) > 1  # the check above could not pass with the old count
