"""Record batches per partition, sent as one produce request per broker over aiokafka's client.

aiokafka's `send()` costs about 13 us of CPU per record, and its `send_batch` path still about 265 us per
produce request (accumulator, sender task, a MessageBatch, handler and futures per batch; a publish-only loop
with 4 and with 64 records per request): at 64 concurrent webhooks a request carries 32 records, so that was
~8 us of every delivery. Here:

- a record is appended to the open batch of its partition (aiokafka's Cython record-batch builder) and its
  caller waits on a plain future;
- every broker has one produce request in flight, carrying the oldest batch of each partition it leads that
  has one; batches grow while it is in flight, and per-partition order is the order of the appends;
- batches carry the producer id and sequence of a `ProducerSession`, so the broker discards a resent batch it
  already wrote; a retriable failure resends the same bytes after a backoff, for up to the request timeout;
- a batch whose callers all gave up before it left (their deadline passed while the broker was away) is
  dropped instead of being sent late.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import DuplicateSequenceNumber, KafkaError, LeaderNotAvailableError, NoError, for_code
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from processor.eventlog.base import Headers
from processor.eventlog.kafka_session import ProducerSession, is_fatal_for_session
from processor.eventlog.partitioner import choose_partition

log = logging.getLogger(__name__)

#: record-batch format v2 (Kafka >= 0.11), uncompressed, not transactional
_MAGIC, _NO_COMPRESSION, _NOT_TRANSACTIONAL = 2, 0, 0
#: acks=all: the leader answers once every in-sync replica has the batch
_ACKS_ALL = -1
#: wait before resending, by attempt (the last repeats); without the jitter of stripe_client.backoff_delay on
#: purpose: partitions refused in one answer (a leader moved) come back together and share the next request
_BACKOFF_S = (0.05, 0.1, 0.25, 0.5, 1.0)


class _Batch:
    """A record batch and the futures of its callers, by offset within the batch."""

    __slots__ = ("attempts", "buffer", "builder", "deadline", "producer_id", "sent", "waiters")

    def __init__(self, builder: DefaultRecordBatchBuilder) -> None:
        self.builder: DefaultRecordBatchBuilder | None = builder
        self.waiters: list[asyncio.Future[int]] = []
        self.buffer: bytes | bytearray | None = None  # the sealed batch, once stamped for sending
        self.producer_id = -1
        self.sent = False  # a request carrying it may have reached a broker
        self.attempts = 0
        self.deadline = 0.0  # loop time after which it is given up; set when it first heads its partition

    def abandoned(self) -> bool:
        return all(waiter.done() for waiter in self.waiters)

    def acknowledged(self, base_offset: int) -> None:
        for relative, waiter in enumerate(self.waiters):
            if not waiter.done():  # a caller that gave up (timeout, cancel) left a cancelled future
                waiter.set_result(base_offset + relative if base_offset >= 0 else -1)

    def failed(self, exc: BaseException) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(exc)


class _Partition:
    """Batches of one partition, oldest first; the last accepts appends until it is sealed."""

    __slots__ = ("batches", "sending", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.batches: collections.deque[_Batch] = collections.deque()
        self.sending = False  # its oldest batch is queued for, in, or waiting to retry a request


class _Node:
    """One broker: the partitions whose oldest batch goes in its next request."""

    __slots__ = ("pumping", "ready")

    def __init__(self) -> None:
        self.ready: dict[TopicPartition, _Partition] = {}
        self.pumping = False


class PartitionBatcher:
    """Appends records to per-partition batches; sends them per broker, one request in flight, in order."""

    def __init__(self, producer: AIOKafkaProducer, on_error: Callable[[Exception], BaseException], *,
                 request_timeout_ms: int = 10_000, batch_size: int = 1024 * 1024, linger_ms: int = 0) -> None:
        self._producer = producer
        # turns a producer error into what callers see (LogUnavailable), and lets the owner mark itself unhealthy
        self._on_error = on_error
        self._request_timeout_ms = request_timeout_ms
        # as long as aiokafka would keep a batch before failing it
        self._delivery_timeout_s = request_timeout_ms / 1000
        self._batch_size = batch_size
        self._linger_s = linger_ms / 1000
        self._session = ProducerSession(producer.client)
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._nodes: dict[int, _Node] = {}
        self._pumps: set[asyncio.Task[None]] = set()
        self._sending = 0  # partitions with a batch on its way
        self._idle = asyncio.Event()
        self._idle.set()
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
        tp = TopicPartition(topic, partition)
        queue = self._partitions.get(tp)
        if queue is None:
            queue = self._partitions[tp] = _Partition(tp)
        listed = headers if isinstance(headers, list) else list(headers)  # the Cython builder takes only lists
        batch = queue.batches[-1] if queue.batches else None
        metadata = None
        if batch is not None and batch.builder is not None:  # still open
            metadata = batch.builder.append(len(batch.waiters), None, key, value, listed)
        if metadata is None:  # no open batch, or it is full
            batch = _Batch(DefaultRecordBatchBuilder(_MAGIC, _NO_COMPRESSION, _NOT_TRANSACTIONAL, -1, -1, -1,
                                                     self._batch_size))
            queue.batches.append(batch)
            # the first record of a batch always fits; the broker refuses what exceeds its own limit
            batch.builder.append(0, None, key, value, listed)  # type: ignore[union-attr]
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        batch.waiters.append(waiter)  # type: ignore[union-attr]
        if not queue.sending:
            self._started(queue)
            self._dispatch(queue)
        return waiter

    def _started(self, queue: _Partition) -> None:
        queue.sending = True
        self._sending += 1
        self._idle.clear()

    def _stopped(self, queue: _Partition) -> None:
        queue.sending = False
        self._sending -= 1
        if not self._sending:
            self._idle.set()

    def _head(self, queue: _Partition) -> _Batch | None:
        """The partition's oldest batch still owed to somebody (None: nothing to send, and it stops sending)."""
        while queue.batches:
            batch = queue.batches[0]
            if batch.sent or not batch.abandoned():  # a sent batch is settled even if nobody waits any more
                if not batch.deadline:
                    batch.deadline = asyncio.get_running_loop().time() + self._delivery_timeout_s
                return batch
            queue.batches.popleft()  # every caller gave up before it left: nobody was promised it
        self._stopped(queue)
        return None

    def _dispatch(self, queue: _Partition) -> None:
        """Put the partition's oldest batch in the next request to its leader."""
        batch = self._head(queue)
        if batch is None:
            return
        leader = self._producer.client.cluster.leader_for_partition(queue.tp)
        if leader is None or leader < 0:  # unknown, or an election is going on
            self._producer.client.force_metadata_update()
            self._retry_later(queue, batch, LeaderNotAvailableError())
            return
        node = self._nodes.get(leader)
        if node is None:
            node = self._nodes[leader] = _Node()
        node.ready[queue.tp] = queue
        if not node.pumping:
            node.pumping = True
            # started on the next loop iteration, so the appends of this one join the request
            task = asyncio.get_running_loop().create_task(self._pump(leader, node))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, node_id: int, node: _Node) -> None:
        """Send requests to one broker until none of its partitions has a batch waiting."""
        try:
            while node.ready:
                if self._linger_s:
                    await asyncio.sleep(self._linger_s)
                ready, node.ready = node.ready, {}
                try:
                    await self._send_one(node_id, ready)
                except Exception as exc:  # a bug here must not leave callers waiting forever
                    log.exception("produce request to node %s failed", node_id)
                    for queue in ready.values():
                        if queue.batches:
                            self._fail(queue, queue.batches[0], exc)
        finally:
            node.pumping = False

    async def _send_one(self, node_id: int, ready: dict[TopicPartition, _Partition]) -> None:
        """One produce request with the oldest batch of every ready partition, and what its answer means."""
        if not self._session.established:
            try:
                await self._session.establish()
            except KafkaError as exc:
                for queue in ready.values():
                    if (batch := self._head(queue)) is not None:
                        self._retry_later(queue, batch, exc)
                return
        batches = self._seal(ready)
        if not batches:
            return
        try:
            response = await self._producer.client.send(node_id, self._request(batches))
        except KafkaError as exc:  # no answer: the broker may or may not have written the batches
            self._producer.client.force_metadata_update()
            for queue, batch in batches.values():
                self._retry_later(queue, batch, exc)
        except asyncio.CancelledError:  # the loop is going away: nobody may wait forever
            for queue, _ in batches.values():
                for batch in queue.batches:
                    batch.failed(self._on_error(KafkaError("the producer stopped before an acknowledgement")))
                queue.batches.clear()
                self._stopped(queue)
            raise
        else:
            self._settle(response, batches)

    def _seal(self, ready: dict[TopicPartition, _Partition]) -> dict[TopicPartition, tuple[_Partition, _Batch]]:
        """Each ready partition's oldest batch, stamped with the session's producer id and sequence."""
        sealed = {}
        session = self._session
        for tp, queue in ready.items():
            batch = self._head(queue)
            if batch is None:
                continue
            if batch.builder is not None:
                batch.builder.set_producer_state(session.producer_id, session.epoch, session.sequence(tp))
                batch.buffer, batch.builder = batch.builder.build(), None
                batch.producer_id = session.producer_id
            elif batch.producer_id != session.producer_id:  # stamped before a reset: its sequence means nothing now
                self._fail(queue, batch, KafkaError("the producer session was reset before this batch was written"))
                continue
            batch.sent = True
            sealed[tp] = (queue, batch)
        return sealed

    def _request(self, batches: dict[TopicPartition, tuple[_Partition, _Batch]]) -> ProduceRequest:
        topics: dict[str, list[tuple[int, Any]]] = collections.defaultdict(list)
        for tp, (_, batch) in batches.items():
            topics[tp.topic].append((tp.partition, batch.buffer))
        return ProduceRequest(None, _ACKS_ALL, self._request_timeout_ms, list(topics.items()))

    def _settle(self, response: Any, batches: dict[TopicPartition, tuple[_Partition, _Batch]]) -> None:
        """Acknowledge, fail or retry every batch of a request by its partition's answer."""
        answers = {}
        for topic, partitions in response.topics:
            for answer in partitions:  # (partition, error code, base offset, ...) in every version
                answers[TopicPartition(topic, answer[0])] = (answer[1], answer[2])
        for tp, (queue, batch) in batches.items():
            if tp not in answers:  # a broker that skips a partition leaves its fate unknown: as for no answer
                self._retry_later(queue, batch, KafkaError(f"no answer for {tp.topic}/{tp.partition}"))
                continue
            code, base_offset = answers[tp]
            error = for_code(code)
            if error is NoError or error is DuplicateSequenceNumber:  # the latter: written by an earlier try
                queue.batches.popleft()
                self._session.advance(tp, batch.producer_id, len(batch.waiters))
                batch.acknowledged(base_offset if error is NoError else -1)
                self._continue(queue)
            elif is_fatal_for_session(error):  # refused, and this producer id cannot go on
                if batch.producer_id == self._session.producer_id:
                    self._session.reset()
                self._fail(queue, batch, error())
            elif error.retriable:
                if error.invalid_metadata:
                    self._producer.client.force_metadata_update()
                self._retry_later(queue, batch, error())
            else:  # refused for good (too large, not authorized): its sequence stays free for the next batch
                self._fail(queue, batch, error())

    def _retry_later(self, queue: _Partition, batch: _Batch, exc: KafkaError) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() >= batch.deadline:
            if batch.sent and batch.producer_id == self._session.producer_id:
                # whether the broker wrote it is unknown: sequences after it could be taken for duplicates
                self._session.reset()
            self._fail(queue, batch, exc)
            return
        batch.attempts += 1
        loop.call_later(_BACKOFF_S[min(batch.attempts, len(_BACKOFF_S)) - 1], self._dispatch, queue)

    def _fail(self, queue: _Partition, batch: _Batch, exc: Exception) -> None:
        queue.batches.popleft()
        batch.failed(self._on_error(exc))
        self._continue(queue)

    def _continue(self, queue: _Partition) -> None:
        if queue.batches:
            self._dispatch(queue)
        else:
            self._stopped(queue)

    async def flush(self) -> None:
        """Wait until every queued record was sent (acknowledged or failed)."""
        await self._idle.wait()
