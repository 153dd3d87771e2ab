"""Kafka producers: every one is built by `new_producer`, and the relay's writes are fenced by a transactional one.

Idempotence is on for every producer (it implies acks=all): a batch whose answer was lost is resent with the same
producer id and sequence, and the broker keeps one copy, so a retry never writes a record twice nor after a newer
one of its partition (aiokafka retries such a batch, never expiring it, until the broker answers). Without it a
retried batch could be stored twice, and a retried older batch after a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced, TransactionCoordinatorFenced

from processor.errors import Fenced, LogUnavailable
from processor.eventlog.base import Headers, Published
from processor.eventlog.kafka.partitioner import kafka_partitioner
from processor.eventlog.kafka.security import KafkaSecurity

#: one open batch per partition; at aiokafka's 16 KiB default, concurrent 1 KiB publishes queued behind round
#: trips (bench/log_throughput.py); kept below the broker's default message.max.bytes (1 MiB)
_MAX_BATCH_BYTES = 512 * 1024
#: errors after which a producer can no longer write: its sender stopped, or a newer holder took its id
FATAL_PRODUCER_ERRORS = (ProducerFenced, InvalidProducerEpoch, TransactionCoordinatorFenced)


def new_producer(bootstrap: str, security: KafkaSecurity, *, client_id: str, request_timeout_ms: int,
                 linger_ms: int = 0, transactional_id: str | None = None) -> AIOKafkaProducer:
    """A not yet started producer: idempotent, acks=all, Kafka's default partitioner (key hashes cached).

    The one place a Kafka producer is configured.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=request_timeout_ms,
        **security.client_options(),
        acks="all", enable_idempotence=True, transactional_id=transactional_id,
        # linger 0: a lone webhook is sent at once; under load batches still form while a request is in flight
        linger_ms=linger_ms, max_batch_size=_MAX_BATCH_BYTES, partitioner=kafka_partitioner,
    )


async def stop_producer(producer: AIOKafkaProducer, timeout_s: float) -> None:
    """Stop a producer without waiting forever: an idempotent producer retries unsent batches until a broker
    answers, and stop() waits for them."""
    with contextlib.suppress(KafkaError, TimeoutError):
        async with asyncio.timeout(timeout_s):
            await producer.stop()


class KafkaFencedPublisher:
    """The writes of one role (the outbox relay) through a transactional producer with a fixed transactional id.

    `claim` (InitProducerId) bumps the id's epoch: the broker then refuses every write and commit of an earlier
    holder and aborts its open transaction, so a relay that lost its lease cannot land a stale write. Each
    `publish_many` is one transaction: readers with isolation_level=read_committed (ours, and downstream's)
    never see the records of an aborted one.
    """

    def __init__(self, bootstrap: str, security: KafkaSecurity, *, transactional_id: str, client_id: str,
                 request_timeout_ms: int) -> None:
        self.transactional_id = transactional_id
        self._bootstrap = bootstrap
        self._security = security
        self._client_id = client_id
        self._request_timeout_ms = request_timeout_ms
        self._timeout_s = request_timeout_ms / 1000 * 3  # coordinator lookup, produce and commit
        self._producer: AIOKafkaProducer | None = None

    async def claim(self) -> None:
        """Become the role's only writer: every earlier holder is fenced from now on."""
        await self.close()
        producer = new_producer(self._bootstrap, self._security, client_id=self._client_id,
                                request_timeout_ms=self._request_timeout_ms, transactional_id=self.transactional_id)
        try:
            async with asyncio.timeout(self._timeout_s):
                await producer.start()  # InitProducerId: returns once the epoch is ours
        except (KafkaError, TimeoutError) as exc:
            await stop_producer(producer, self._timeout_s)
            raise LogUnavailable(f"cannot claim transactional id {self.transactional_id!r}: {exc!r}") from exc
        self._producer = producer

    async def publish_many(self, records: Sequence[tuple[str, bytes | None, bytes, Headers]]) -> list[Published]:
        """All `records` in one committed transaction, or none of them visible (Fenced, LogUnavailable)."""
        producer = self._producer
        if producer is None:
            raise Fenced(f"transactional id {self.transactional_id!r} is not claimed")
        try:
            async with asyncio.timeout(self._timeout_s):
                await producer.begin_transaction()
                futures = [await producer.send(topic, value, key=key, headers=list(headers))
                           for topic, key, value, headers in records]
                outcomes = await asyncio.gather(*futures, return_exceptions=True)
                written = [o for o in outcomes if not isinstance(o, BaseException)]
                if len(written) < len(outcomes):  # every future was awaited, so no failure goes unretrieved
                    raise next(o for o in outcomes if isinstance(o, BaseException))
                await producer.commit_transaction()
        except BaseException as exc:
            # whatever state the transaction is in, it is never committed: the producer goes, and the next claim's
            # InitProducerId aborts the transaction on the coordinator
            await self.close()
            if isinstance(exc, FATAL_PRODUCER_ERRORS):
                raise Fenced(f"transactional id {self.transactional_id!r} was claimed by another writer") from exc
            if isinstance(exc, KafkaError | TimeoutError):
                raise LogUnavailable(f"Kafka transaction failed: {exc!r}") from exc
            raise
        return [Published(m.topic, m.partition, m.offset) for m in written]

    async def close(self) -> None:
        """Stop the producer (safe to call twice); the role stays claimed until another holder claims it."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await stop_producer(producer, self._timeout_s)
