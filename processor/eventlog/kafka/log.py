"""The Kafka event-log backend (aiokafka).

The producer is aiokafka's own, idempotent with `acks=all` (kafka_producer.py), so `publish` returns only once
every in-sync replica has the record and a resent batch is never written twice. The relay writes through a
transactional producer (`fenced_publisher`), so every reader here uses isolation_level=read_committed.
Consumers never auto-commit: the caller commits after its own database transaction, and a commit after a
rebalance is refused (CommitRejected) instead of moving an offset the consumer no longer owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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
    OutOfOrderSequenceNumber,
    TopicAlreadyExistsError,
    UnknownProducerId,
)

from processor.errors import CommitRejected, LogUnavailable
from processor.eventlog.base import Headers, Published, Record, TopicPartition
from processor.eventlog.kafka.diagnosis import AUTHORIZATION_ERRORS, diagnose
from processor.eventlog.kafka.producer import FATAL_PRODUCER_ERRORS, KafkaFencedPublisher, new_producer, stop_producer
from processor.eventlog.kafka.security import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)

#: how often the producer's connection is checked for /readyz
_HEALTH_INTERVAL_S = 2.0
#: after the cluster refused a write as unauthorized, not ready for this long (or until a write succeeds); then
#: ready again so that a retried delivery tests whether an operator granted the ACL meanwhile
_DENIED_READINESS_S = 30.0
#: `read` stops after this many empty 250 ms polls short of its end (records deleted, a transaction still open)
_READ_IDLE_POLLS = 4


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
        self._replacing = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()  # replaced producers being stopped
        self._health_task: asyncio.Task[None] | None = None
        self._healthy = False
        self._denied_until = 0.0

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = await self._started_producer()
        self._producer = producer
        self._healthy = True
        self._health_task = asyncio.create_task(self._watch_health(), name="kafka-health")

    async def _started_producer(self) -> AIOKafkaProducer:
        producer = new_producer(self.bootstrap, self.security, client_id=self.client_id,
                                request_timeout_ms=self.request_timeout_ms, linger_ms=self.linger_ms)
        try:
            await producer.start()
        except KafkaError as exc:
            await stop_producer(producer, self.request_timeout_ms / 1000)
            if isinstance(exc, AUTHORIZATION_ERRORS):  # connected, but may not produce at all (no WRITE ACL)
                reason: object = (f"this client ({self.security.describe()}) is not authorized to produce ({exc!r}); "
                                  "see deploy/README.md, 'Kafka ACLs'")
            else:
                reason = await diagnose(self.bootstrap.split(","), self.security) or exc
            raise LogUnavailable(f"cannot connect to Kafka at {self.bootstrap}: {reason}") from exc
        return producer

    async def stop(self) -> None:
        """Flush pending records and disconnect. Safe to call twice."""
        producer, self._producer = self._producer, None
        task, self._health_task = self._health_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if producer is not None:  # what callers handed over reaches the broker before the producer stops
            await stop_producer(producer, self.request_timeout_ms / 1000)
        if self._retiring:
            await asyncio.gather(*self._retiring)
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
        return self._producer is not None and self._healthy and time.monotonic() >= self._denied_until

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise LogUnavailable("the Kafka event log is not started")
        return self._producer

    async def _write_failed(self, producer: AIOKafkaProducer, exc: BaseException) -> LogUnavailable:
        self._healthy = False
        if isinstance(exc, AUTHORIZATION_ERRORS):
            return self._denied(exc)
        if isinstance(exc, (*FATAL_PRODUCER_ERRORS, OutOfOrderSequenceNumber, UnknownProducerId)):
            await self._replace(producer)  # this producer id cannot write any more: the next publish gets a new one
        return LogUnavailable(f"Kafka did not acknowledge the write: {exc!r}")

    def _denied(self, exc: BaseException) -> LogUnavailable:
        """A write refused as unauthorized: metadata still flows, so the health watch alone would report ready
        while every write is refused."""
        already_denied = time.monotonic() < self._denied_until
        self._denied_until = time.monotonic() + _DENIED_READINESS_S
        if not already_denied:  # one line per outage, not one per delivery
            log.error("Kafka refused a write as unauthorized (%r): this client (%s) needs WRITE and DESCRIBE on the "
                      "topic; see deploy/README.md, 'Kafka ACLs'", exc, self.security.describe())
        return LogUnavailable(f"Kafka refused the write, this client is not authorized: {exc!r}")

    async def _replace(self, broken: AIOKafkaProducer) -> None:
        async with self._replacing:
            if self._producer is not broken:  # another failed publish replaced it already
                return
            self._producer = await self._started_producer()
        # stopped in the background: stop() waits for what the broken producer still holds, and the caller whose
        # publish failed must get its answer now; the task is kept until it ends, and stop() waits for it
        retiring = asyncio.create_task(stop_producer(broken, self.request_timeout_ms / 1000))
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)

    async def publish(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> Published:
        producer = self._require_producer()
        try:
            sent = await producer.send(topic, value, key=key, headers=list(headers))
            metadata = await sent
        except KafkaError as exc:
            raise await self._write_failed(producer, exc) from exc
        self._healthy = True
        self._denied_until = 0.0
        return Published(topic, metadata.partition, metadata.offset)

    async def publish_many(self, records: Sequence[tuple[str, bytes | None, bytes, Headers]]) -> list[Published]:
        producer = self._require_producer()
        try:
            # handed to the producer in order before any acknowledgement is awaited: per-partition order is the
            # order of `records`
            futures = [await producer.send(topic, value, key=key, headers=list(headers))
                       for topic, key, value, headers in records]
        except KafkaError as exc:
            raise await self._write_failed(producer, exc) from exc
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        written = [o for o in outcomes if not isinstance(o, BaseException)]
        if len(written) < len(outcomes):  # every future was awaited, so no failure goes unretrieved
            failure = next(o for o in outcomes if isinstance(o, BaseException))
            raise await self._write_failed(producer, failure) from failure
        self._healthy = True
        return [Published(m.topic, m.partition, m.offset) for m in written]

    def fenced_publisher(self, role: str) -> KafkaFencedPublisher:
        """A writer for `role` fenced by a transactional producer whose transactional id is `role`."""
        return KafkaFencedPublisher(self.bootstrap, self.security, transactional_id=role,
                                    client_id=f"{self.client_id}-{role}", request_timeout_ms=self.request_timeout_ms)

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
                                    isolation_level="read_committed", **self.security.client_options())
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
            idle = 0
            # the position, not the last record, says when to stop: a transaction's commit marker takes an offset
            while await consumer.position(ktp) < end and idle < _READ_IDLE_POLLS:
                batch = (await consumer.getmany(ktp, timeout_ms=250, max_records=1000)).get(ktp, [])
                idle = 0 if batch else idle + 1
                for message in batch:
                    if message.offset >= end:
                        return records
                    records.append(_record(message))
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
            # the relay's aborted transactions stay invisible (downstream consumers must do the same)
            isolation_level="read_committed",
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
