"""Batching, retries and idempotence of the Kafka producer path, against a fake broker client (what the broker
makes of it is in the event-log contract suite and the ingress outage test, against a real broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import NotLeaderForPartitionError, OutOfOrderSequenceNumber, RequestTimedOutError
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.protocol.transaction import InitProducerIdRequest
from aiokafka.record.default_records import DefaultRecordBatch

from processor.errors import LogUnavailable
from processor.eventlog.kafka_batches import PartitionBatcher
from processor.eventlog.partitioner import choose_partition


class FakeCluster:
    """aiokafka's ClusterMetadata as the batcher uses it: partitions, leaders and update listeners."""

    def __init__(self, partitions: int = 2, leaders: dict[int, int] | None = None) -> None:
        self.partitions = partitions
        self.leaders = leaders or {}  # partition -> node (default node 1)
        self.listeners: list[Any] = []

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.partitions)) if topic == "t" else None

    def leader_for_partition(self, tp: Any) -> int:
        return self.leaders.get(tp.partition, 1)

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def update(self, partitions: int) -> None:
        self.partitions = partitions
        for listener in self.listeners:
            listener(self)


class Sent:
    """One produce request as the broker would see it: the node, and per partition the batch."""

    def __init__(self, node: int, request: ProduceRequest) -> None:
        self.node = node
        self.buffers = {
            (topic, partition): bytes(buffer)
            for topic, partitions in request._topics
            for partition, buffer in partitions
        }
        self.answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    @property
    def batches(self) -> dict[tuple[str, int], DefaultRecordBatch]:
        return {tp: DefaultRecordBatch(buffer) for tp, buffer in self.buffers.items()}

    def values(self, partition: int) -> list[bytes | None]:
        return [record.value for record in DefaultRecordBatch(self.buffers["t", partition])]


class FakeClient:
    """Answers InitProducerId with fresh producer ids; holds produce requests until the test answers them."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.sent: list[Sent] = []
        self.producer_ids = 0
        self.metadata_updates = 0

    def get_random_node(self) -> int:
        return 1

    def force_metadata_update(self) -> None:
        self.metadata_updates += 1

    async def send(self, node: int, request: Any) -> Any:
        if isinstance(request, InitProducerIdRequest):
            self.producer_ids += 1
            return type("InitResponse", (), {"error_code": 0, "producer_id": 100 + self.producer_ids,
                                             "producer_epoch": 0})()
        sent = Sent(node, request)
        self.sent.append(sent)
        return await sent.answer

    def answer(self, index: int, errors: dict[int, int] | None = None, offset: int = 0) -> None:
        """Answer request `index`: every partition written at `offset`, unless `errors` gives its code."""
        sent = self.sent[index]
        answers = [(partition, (errors or {}).get(partition, 0), offset, -1, 0, [], None)
                   for (_, partition) in sent.buffers]
        sent.answer.set_result(type("ProduceResponse", (), {"topics": [("t", answers)]})())

    def fail(self, index: int, exc: Exception) -> None:
        self.sent[index].answer.set_exception(exc)


class FakeProducer:
    def __init__(self, client: FakeClient) -> None:
        self.client = client


def batcher_for(cluster: FakeCluster | None = None, **options: Any) -> tuple[PartitionBatcher, FakeClient]:
    client = FakeClient(cluster or FakeCluster())
    batcher = PartitionBatcher(FakeProducer(client), lambda exc: LogUnavailable(str(exc)), **options)  # type: ignore[arg-type]
    return batcher, client


async def until(condition: Any, timeout_s: float = 2.0) -> None:
    """Let the loop run until `condition` holds (retries wait out a backoff of tens of milliseconds)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.001)


async def test_records_of_one_loop_iteration_share_a_batch_and_the_next_waits_for_the_ack() -> None:
    """Appends made together go out as one batch; later ones collect while it is in flight, then follow."""
    batcher, client = batcher_for()
    first = [batcher.append("t", 0, b"k", b"%d" % i, []) for i in range(3)]
    await until(lambda: client.sent)
    second = [batcher.append("t", 0, b"k", b"%d" % i, []) for i in range(3, 5)]
    await asyncio.sleep(0)
    assert len(client.sent) == 1  # the second batch waits for the first's acknowledgement
    assert client.sent[0].values(0) == [b"0", b"1", b"2"]
    client.answer(0, offset=0)
    await until(lambda: len(client.sent) == 2)
    client.answer(1, offset=3)
    assert await asyncio.gather(*first, *second) == [0, 1, 2, 3, 4]
    assert client.sent[1].values(0) == [b"3", b"4"]


async def test_partitions_of_one_broker_share_a_request_and_each_broker_gets_its_own() -> None:
    batcher, client = batcher_for(FakeCluster(partitions=3, leaders={0: 1, 1: 1, 2: 2}))
    waiters = [batcher.append("t", partition, b"k", b"v", []) for partition in (0, 1, 2)]
    await until(lambda: len(client.sent) == 2)
    by_node = {sent.node: sorted(sent.batches) for sent in client.sent}
    assert by_node == {1: [("t", 0), ("t", 1)], 2: [("t", 2)]}
    client.answer(0, offset=7)
    client.answer(1, offset=9)
    offsets = await asyncio.gather(*waiters)
    assert offsets == ([7, 7, 9] if client.sent[0].node == 1 else [9, 9, 7])


async def test_batches_carry_the_producer_id_and_a_sequence_that_advances_by_records_written() -> None:
    batcher, client = batcher_for()
    first = [batcher.append("t", 0, b"k", b"a", []) for _ in range(3)]
    await until(lambda: client.sent)
    client.answer(0)
    await asyncio.gather(*first)
    second = batcher.append("t", 0, b"k", b"b", [])
    await until(lambda: len(client.sent) == 2)
    client.answer(1, offset=3)
    await second
    batches = [sent.batches["t", 0] for sent in client.sent]
    assert [(b.producer_id, b.base_sequence) for b in batches] == [(101, 0), (101, 3)]


async def test_a_retriable_error_resends_the_same_batch_until_it_is_written() -> None:
    """NOT_LEADER: same records, same sequence (the broker would drop a duplicate), after a metadata refresh."""
    batcher, client = batcher_for()
    waiter = batcher.append("t", 0, b"k", b"v", [])
    await until(lambda: client.sent)
    client.answer(0, errors={0: NotLeaderForPartitionError.errno})
    await until(lambda: len(client.sent) == 2)  # after the first backoff
    client.answer(1, offset=42)
    assert await waiter == 42
    first, again = (sent.batches["t", 0] for sent in client.sent)
    assert (again.producer_id, again.base_sequence) == (first.producer_id, first.base_sequence)
    assert client.sent[1].values(0) == [b"v"]
    assert client.metadata_updates >= 1


async def test_a_sent_batch_given_up_on_starts_a_new_producer_session() -> None:
    """No answer until the delivery timeout: whether it was written is unknown, so later batches must not reuse
    its sequence under the same producer id (the broker would take them for duplicates and drop them)."""
    batcher, client = batcher_for(request_timeout_ms=1)
    lost = batcher.append("t", 0, b"k", b"lost", [])
    await until(lambda: client.sent)
    await asyncio.sleep(0.01)  # past the delivery timeout
    client.fail(0, RequestTimedOutError())
    with pytest.raises(LogUnavailable):
        await lost
    later = batcher.append("t", 0, b"k", b"later", [])
    await until(lambda: len(client.sent) == 2)
    client.answer(1, offset=5)
    assert await later == 5
    assert [sent.batches["t", 0].producer_id for sent in client.sent] == [101, 102]
    assert client.sent[1].batches["t", 0].base_sequence == 0


async def test_out_of_order_sequence_fails_the_batch_and_resets_the_session() -> None:
    batcher, client = batcher_for()
    refused = batcher.append("t", 0, b"k", b"v", [])
    await until(lambda: client.sent)
    client.answer(0, errors={0: OutOfOrderSequenceNumber.errno})
    with pytest.raises(LogUnavailable):
        await refused
    accepted = batcher.append("t", 0, b"k", b"v", [])
    await until(lambda: len(client.sent) == 2)
    client.answer(1)
    await accepted
    assert client.sent[1].batches["t", 0].producer_id == 102


async def test_a_batch_nobody_waits_for_any_more_is_not_sent() -> None:
    """Callers that gave up (a deadline passed while the broker was slow) leave nothing to send late."""
    batcher, client = batcher_for()
    kept = batcher.append("t", 0, b"k", b"kept", [])
    await until(lambda: client.sent)
    abandoned = [batcher.append("t", 0, b"k", b"late", []) for _ in range(2)]
    for waiter in abandoned:
        waiter.cancel()
    client.answer(0)
    assert await kept == 0
    await batcher.flush()
    assert len(client.sent) == 1


async def test_flush_waits_for_every_batch_on_its_way() -> None:
    batcher, client = batcher_for()
    waiter = batcher.append("t", 0, b"k", b"v", [])
    flushed = asyncio.create_task(batcher.flush())
    await until(lambda: client.sent)
    assert not flushed.done()
    client.answer(0)
    await flushed
    assert waiter.done()


async def test_records_are_placed_by_the_partition_count_of_the_latest_metadata() -> None:
    """Kafka's default partitioner over the topic's current partitions; a topic that grew spreads wider."""
    cluster = FakeCluster(2)
    batcher, _ = batcher_for(cluster)
    keys = [b"acct_%d" % i for i in range(50)]
    assert [batcher.place("t", key) for key in keys] == [choose_partition(key, 2) for key in keys]
    assert batcher.place("unknown", b"k") is None  # no metadata yet: the caller waits for it
    cluster.update(8)
    placed = [batcher.place("t", key) for key in keys]
    assert placed == [choose_partition(key, 8) for key in keys]
    assert max(placed) > 1  # the check above could not pass with the old count
