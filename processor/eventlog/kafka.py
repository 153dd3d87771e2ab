"""The Kafka event-log backend (aiokafka).

The producer is idempotent with `acks=all` (kafka_batches.py, kafka_session.py), so `publish` returns only once
every in-sync replica has the record and a resent batch is never written twice. Consumers never auto-commit:
the caller commits after its own database transaction, and a commit after a rebalance is refused
(CommitRejected) instead of moving an offset the consumer no longer owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
)

from processor.errors import CommitRejected, LogUnavailable
from processor.eventlog.base import Headers, Published, Record, TopicPartition
from processor.eventlog.kafka_batches import PartitionBatcher
from processor.kafka_security import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)

#: how often the producer's connection is checked for /readyz
_HEALTH_INTERVAL_S = 2.0


def _record(message: Any) -> Record:
    return Record(
        topic=message.topic, partition=message.partition, offset=message.offset, key=message.key,
        value=message.value, headers=tuple(message.headers or ()), timestamp_ms=message.timestamp,
    )


class KafkaEventLog:
    """Producer, admin and consumer factory for one Kafka cluster."""

    name = "kafka"

    def __init__(self, bootstrap_servers: Sequence[str], *, client_id: str = "processor",
                 request_timeout_ms: int = 10_000, default_partitions: int = 4,
                 replication_factor: int = 1, linger_ms: int = 0, security: KafkaSecurity = PLAINTEXT) -> None:
        self.bootstrap = ",".join(bootstrap_servers)
        self.security = security
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self.default_partitions = default_partitions
        self.replication_factor = replication_factor
        self.linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._batcher: PartitionBatcher | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._healthy = False

    async def start(self) -> None:
        if self._producer is not None:
            return
        # aiokafka's producer provides the connections, cluster metadata and API versions; the batcher builds
        # and sends the produce requests itself (acks=all, idempotent through its own producer session), so
        # aiokafka's sender never has anything to send and its idempotence stays off
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, client_id=self.client_id, request_timeout_ms=self.request_timeout_ms,
            **self.security.client_options(),
        )
        try:
            await producer.start()
        except KafkaError as exc:
            with contextlib.suppress(KafkaError):
                await producer.stop()
            raise LogUnavailable(f"cannot connect to Kafka at {self.bootstrap}: {exc}") from exc
        self._producer = producer
        self._batcher = PartitionBatcher(
            producer, self._write_failed, request_timeout_ms=self.request_timeout_ms,
            # one open batch per partition; at aiokafka's 16 KiB default, concurrent 1 KiB publishes queued behind
            # round trips (measured: 1.1k rec/s vs 12.6k with 1 MiB batches, bench/log_throughput.py)
            batch_size=1024 * 1024,
            # linger 0: a lone webhook is sent at once (bench/ingress.py: p50 at 1 connection 3.4 ms with 2 ms of
            # linger, 0.8 ms without); under load batches still form while a request is in flight
            linger_ms=self.linger_ms,
        )
        self._healthy = True
        self._health_task = asyncio.create_task(self._watch_health(), name="kafka-health")

    async def stop(self) -> None:
        """Flush pending records and disconnect. Safe to call twice."""
        batcher, self._batcher = self._batcher, None
        if batcher is not None:  # what callers appended reaches the producer before it stops
            await batcher.flush()
        producer, self._producer = self._producer, None
        task, self._health_task = self._health_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()
        self._healthy = False

    async def __aenter__(self) -> KafkaEventLog:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _watch_health(self) -> None:
        while self._producer is not None:
            try:
                await asyncio.wait_for(self._producer.client.fetch_all_metadata(), _HEALTH_INTERVAL_S)
            except (KafkaError, TimeoutError):
                self._healthy = False
            else:
                self._healthy = True
            await asyncio.sleep(_HEALTH_INTERVAL_S)

    def healthy(self) -> bool:
        return self._producer is not None and self._healthy

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise LogUnavailable("the Kafka event log is not started")
        return self._producer

    def _write_failed(self, exc: Exception) -> LogUnavailable:
        self._healthy = False
        return LogUnavailable(f"Kafka did not acknowledge the write: {exc}")

    def _require_batcher(self) -> PartitionBatcher:
        if self._batcher is None:
            raise LogUnavailable("the Kafka event log is not started")
        return self._batcher

    async def publish(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> Published:
        batcher = self._require_batcher()
        partition = batcher.place(topic, key)
        if partition is None:
            partition = await batcher.place_when_known(topic, key)
        offset = await batcher.append(topic, partition, key, value, headers)
        self._healthy = True
        return Published(topic, partition, offset)

    async def publish_many(self, records: Sequence[tuple[str, bytes | None, bytes, Headers]]) -> list[Published]:
        batcher = self._require_batcher()
        # appended in order before anything is awaited: per-partition order is the order of `records`
        placed = [(topic, await batcher.place_when_known(topic, key)) for topic, key, _, _ in records]
        waiters = [batcher.append(topic, partition, key, value, headers)
                   for (topic, partition), (_, key, value, headers) in zip(placed, records, strict=True)]
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        offsets = [o for o in outcomes if not isinstance(o, BaseException)]
        if len(offsets) < len(outcomes):  # every future was awaited, so no failure goes unretrieved
            raise next(o for o in outcomes if isinstance(o, BaseException))
        self._healthy = True
        return [Published(topic, partition, offset) for (topic, partition), offset in zip(placed, offsets, strict=True)]

    async def ensure_topics(self, topics: Sequence[str], partitions: int | None = None,
                            configs: Mapping[str, Mapping[str, str]] | None = None) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-admin",
                                    request_timeout_ms=self.request_timeout_ms, **self.security.client_options())
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(name=topic, num_partitions=partitions or self.default_partitions,
                         replication_factor=self.replication_factor,
                         topic_configs=dict((configs or {}).get(topic, {})))
                for topic in topics if topic not in existing
            ]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):  # another process won the race
                    await admin.create_topics(missing)
                await self._wait_for_leaders([t.name for t in missing])
        except KafkaError as exc:
            raise LogUnavailable(f"cannot create topics on {self.bootstrap}: {exc}") from exc
        finally:
            await admin.close()

    async def _wait_for_leaders(self, topics: Sequence[str], timeout_s: float = 30.0) -> None:
        """A freshly created topic takes a moment to elect leaders; producing before that fails."""
        producer = self._producer
        client = producer.client if producer is not None else None
        if client is None:
            return
        async with asyncio.timeout(timeout_s):
            for topic in topics:
                while True:
                    await client.force_metadata_update()
                    partitions = client.cluster.partitions_for_topic(topic)
                    if partitions and all(client.cluster.leader_for_partition(KafkaTP(topic, p)) is not None
                                          for p in partitions):
                        break
                    await asyncio.sleep(0.1)

    async def _plain_consumer(self) -> AIOKafkaConsumer:
        """A started group-less consumer with fresh metadata, for inspection reads."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-reader",
                                    enable_auto_commit=False, request_timeout_ms=self.request_timeout_ms,
                                    **self.security.client_options())
        await consumer.start()
        # aiokafka cancels a background task on stop(); stopping before it ran once raises CancelledError
        await asyncio.sleep(0)
        return consumer

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        partitions = await self._require_producer().partitions_for(topic)
        consumer = await self._plain_consumer()
        try:
            ends = await consumer.end_offsets([KafkaTP(topic, p) for p in partitions])
        finally:
            await consumer.stop()
        return {TopicPartition(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}

    async def group_offsets(self, group: str, topic: str) -> dict[TopicPartition, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-admin",
                                    request_timeout_ms=self.request_timeout_ms, **self.security.client_options())
        try:
            await admin.start()
            found = await admin.list_consumer_group_offsets(group)
        except KafkaError as exc:
            raise LogUnavailable(f"cannot read the offsets of group {group} on {self.bootstrap}: {exc}") from exc
        finally:
            await admin.close()
        # the broker answers -1 for a partition the group has no offset for
        return {TopicPartition(tp.topic, tp.partition): int(meta.offset)
                for tp, meta in found.items() if tp.topic == topic and meta.offset >= 0}

    async def read(self, tp: TopicPartition, start: int, end: int) -> list[Record]:
        consumer = await self._plain_consumer()
        records: list[Record] = []
        try:
            ktp = KafkaTP(*tp)
            consumer.assign([ktp])
            consumer.seek(ktp, start)
            while start < end:
                batch = (await consumer.getmany(ktp, timeout_ms=1000, max_records=1000)).get(ktp, [])
                if not batch:
                    break
                for message in batch:
                    if message.offset >= end:
                        return records
                    records.append(_record(message))
                    start = message.offset + 1
        finally:
            await consumer.stop()
        return records

    def consumer(self, group: str, topics: Sequence[str], *, from_beginning: bool = True,
                 session_timeout_s: float | None = None) -> KafkaLogConsumer:
        # the broker's group.min.session.timeout.ms defaults to 6 s
        timeout_ms = int((session_timeout_s or 10.0) * 1000)
        return KafkaLogConsumer(self, group, topics, from_beginning=from_beginning,
                                session_timeout_ms=max(timeout_ms, 6000))


class KafkaLogConsumer:
    """One member of a Kafka consumer group."""

    def __init__(self, log_: KafkaEventLog, group: str, topics: Sequence[str], *, from_beginning: bool,
                 session_timeout_ms: int) -> None:
        self.group = group
        self.topics = list(topics)
        self._consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=log_.bootstrap, client_id=f"{log_.client_id}-{group}",
            group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            session_timeout_ms=session_timeout_ms, heartbeat_interval_ms=max(session_timeout_ms // 5, 500),
            request_timeout_ms=log_.request_timeout_ms, **log_.security.client_options(),
        )
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        try:
            await self._consumer.start()
        except KafkaError as exc:
            raise LogUnavailable(f"consumer cannot join group {self.group}: {exc}") from exc
        self._started = True

    async def stop(self) -> None:
        """Leave the group (a prompt rebalance for the others). Safe to call twice."""
        if self._started:
            self._started = False
            await self._consumer.stop()

    async def __aenter__(self) -> KafkaLogConsumer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        try:
            batches = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            raise LogUnavailable(f"Kafka fetch failed: {exc}") from exc
        records = [_record(m) for messages in batches.values() for m in messages]
        records.sort(key=lambda r: (r.topic, r.partition, r.offset))
        return records

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await self._consumer.commit({KafkaTP(*tp): offset for tp, offset in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            raise CommitRejected(f"commit refused after a rebalance: {exc}") from exc
        except KafkaError as exc:
            raise LogUnavailable(f"Kafka commit failed: {exc}") from exc

    async def committed(self, tp: TopicPartition) -> int | None:
        value = await self._consumer.committed(KafkaTP(*tp))
        return None if value is None else int(value)

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment())

    def _owned(self, tps: Sequence[TopicPartition]) -> list[KafkaTP]:
        """The partitions of `tps` this member still owns. A rebalance can take any partition between the
        caller's decision and its call (a retry's backoff spans rebalances), and aiokafka raises
        IllegalStateError for one no longer assigned; its new owner reads it from the last commit anyway."""
        assigned = self._consumer.assignment()
        return [KafkaTP(*tp) for tp in tps if KafkaTP(*tp) in assigned]

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        for owned in self._owned([tp]):
            self._consumer.seek(owned, offset)

    async def offsets_for_time(self, timestamp_ms: int) -> dict[TopicPartition, int]:
        owned = list(self._consumer.assignment())
        found = await self._consumer.offsets_for_times({tp: timestamp_ms for tp in owned})
        ends = await self._consumer.end_offsets(owned)
        return {
            TopicPartition(tp.topic, tp.partition): int(found[tp].offset if found.get(tp) else ends[tp])
            for tp in owned
        }

    def pause(self, *tps: TopicPartition) -> None:
        self._consumer.pause(*self._owned(tps))

    def resume(self, *tps: TopicPartition) -> None:
        self._consumer.resume(*self._owned(tps))
