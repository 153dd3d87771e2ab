"""Record batches per partition for the Kafka producer: many concurrent `publish` calls, one produce per batch.

aiokafka's `send()` costs about 13 us of CPU per record (a coroutine chain, a metadata wait, serialization,
a RecordMetadata and a future per record), a third of what a whole no-op HTTP request costs the ingress.
Here a record is appended to the open batch of its partition (aiokafka's Cython builder) and its caller
waits on a plain future; the batch goes to aiokafka's public `send_batch` once the partition's previous batch
is acknowledged, so batches grow on their own while the broker works, and per-partition order is the order of
the appends. Only public aiokafka API is used (`create_batch`, `send_batch`, `BatchBuilder.append`).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from processor.eventlog.base import Headers
from processor.eventlog.partitioner import choose_partition


class _Batch:
    """An aiokafka batch under construction and the futures of the callers waiting for it."""

    __slots__ = ("builder", "waiters")

    def __init__(self, builder: object) -> None:
        self.builder = builder
        # (future, offset within the batch) per record
        self.waiters: list[tuple[asyncio.Future[int], int]] = []

    def acknowledged(self, base_offset: int) -> None:
        for waiter, relative in self.waiters:
            if not waiter.done():  # a caller that gave up (timeout, cancel) left a cancelled future
                waiter.set_result(base_offset + relative)

    def failed(self, exc: BaseException) -> None:
        for waiter, _ in self.waiters:
            if not waiter.done():
                waiter.set_exception(exc)


class _Partition:
    """Batches of one partition, oldest first; the last accepts appends until its turn to be sent."""

    __slots__ = ("batches", "sending")

    def __init__(self) -> None:
        self.batches: collections.deque[_Batch] = collections.deque()
        self.sending = False


class PartitionBatcher:
    """Appends records to per-partition batches and sends each partition's batches one at a time, in order."""

    def __init__(self, producer: AIOKafkaProducer, on_error: Callable[[Exception], BaseException]) -> None:
        self._producer = producer
        # turns a producer error into what callers see (LogUnavailable), and lets the owner mark itself unhealthy
        self._on_error = on_error
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._senders: set[asyncio.Task[None]] = set()
        # partitions per topic, from the cluster metadata aiokafka keeps current; read once per metadata update
        # rather than per record (aiokafka builds a new set on every `partitions_for_topic`)
        self._partition_counts: dict[str, int] = {}
        self._watching_metadata = False

    def place(self, topic: str, key: bytes | None) -> int | None:
        """The record's partition, from the cluster metadata; None if the topic's is not known yet."""
        count = self._partition_counts.get(topic)
        if count is None:
            cluster = self._producer.client.cluster
            if not self._watching_metadata:
                cluster.add_listener(self._metadata_updated)
                self._watching_metadata = True
            known = cluster.partitions_for_topic(topic)
            if not known:
                return None
            count = self._partition_counts[topic] = len(known)
        return choose_partition(key, count)

    def _metadata_updated(self, cluster: object) -> None:
        self._partition_counts.clear()  # a topic may have gained partitions

    async def place_when_known(self, topic: str, key: bytes | None) -> int:
        """`place`, waiting for the topic's metadata if needed (up to the producer's request timeout)."""
        placed = self.place(topic, key)
        if placed is not None:
            return placed
        try:
            partitions = await self._producer.partitions_for(topic)
        except KafkaError as exc:  # no metadata within the timeout: the log is unavailable, as for a failed write
            raise self._on_error(exc) from exc
        return choose_partition(key, len(partitions))

    def append(
        self, topic: str, partition: int, key: bytes | None, value: bytes, headers: Headers
    ) -> asyncio.Future[int]:
        """Queue one record; the future resolves to its offset once the broker acknowledged its batch."""
        queue = self._partitions.get((topic, partition))
        if queue is None:
            queue = self._partitions[topic, partition] = _Partition()
        metadata = None
        listed = headers if isinstance(headers, list) else list(headers)  # the Cython builder takes only lists
        if queue.batches:
            metadata = queue.batches[-1].builder.append(timestamp=None, key=key, value=value, headers=listed)  # type: ignore[attr-defined]
        if metadata is None:  # no open batch, or it is full
            queue.batches.append(_Batch(self._producer.create_batch()))
            metadata = queue.batches[-1].builder.append(timestamp=None, key=key, value=value, headers=listed)  # type: ignore[attr-defined]
            if metadata is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit in a producer batch")
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        queue.batches[-1].waiters.append((waiter, metadata.offset))
        if not queue.sending:
            queue.sending = True
            # started on the next loop iteration, so the publishes of this one join the batch
            task = asyncio.get_running_loop().create_task(self._send(topic, partition, queue))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)
        return waiter

    async def _send(self, topic: str, partition: int, queue: _Partition) -> None:
        try:
            while queue.batches:
                batch = queue.batches.popleft()
                if all(waiter.done() for waiter, _ in batch.waiters):
                    # every caller gave up (the ingress answered 503 after its deadline, e.g. while the broker
                    # was away): nobody was promised this batch, and sending it late would only add duplicates
                    # and keep an outage's backlog in memory
                    continue
                try:
                    delivered = await self._producer.send_batch(batch.builder, topic, partition=partition)
                    metadata = await delivered
                except Exception as exc:  # KafkaError, or ProducerClosed at shutdown: every waiter hears of it
                    batch.failed(self._on_error(exc))
                except asyncio.CancelledError:  # stopped at shutdown: nobody may wait forever
                    for abandoned in (batch, *queue.batches):
                        abandoned.failed(self._on_error(KafkaError("the producer stopped before sending")))
                    queue.batches.clear()
                    raise
                else:
                    batch.acknowledged(metadata.offset)
        finally:
            queue.sending = False

    async def flush(self) -> None:
        """Wait until every queued record was sent (acknowledged or failed)."""
        while self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)
