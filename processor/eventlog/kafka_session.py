"""The idempotent-producer state the batcher stamps on its batches: a producer id and epoch from the broker
(InitProducerId) and the next sequence number of every partition.

The broker keeps the last sequence it wrote per producer id and partition; a batch resent with the same
sequence after a lost response is answered DUPLICATE_SEQUENCE_NUMBER instead of being written twice. That
holds only while the batcher follows two rules: one batch in flight per partition, and a sequence advances
only when its batch is known to be written. When that knowledge is lost (a batch given up on after sending,
or the broker reporting OUT_OF_ORDER_SEQUENCE_NUMBER / UNKNOWN_PRODUCER_ID), the session is reset and the
next batch starts over under a new producer id, as Kafka's Java producer does by bumping its epoch.
"""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaError,
    NoError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    for_code,
)
from aiokafka.protocol.transaction import InitProducerIdRequest

#: sequence numbers are int32 on the wire and wrap to 0 (KIP-98)
_SEQUENCE_SPACE = 2**31


class ProducerSession:
    """Producer id, epoch and per-partition sequences; `reset` forgets them all."""

    def __init__(self, client: AIOKafkaClient, transaction_timeout_ms: int = 60_000) -> None:
        self._client = client
        self._transaction_timeout_ms = transaction_timeout_ms
        self.producer_id = -1
        self.epoch = -1
        self._sequences: dict[TopicPartition, int] = {}
        self._establishing = asyncio.Lock()  # brokers' senders share one producer id

    @property
    def established(self) -> bool:
        return self.producer_id >= 0

    async def establish(self) -> None:
        """Ask a broker for a producer id unless one is held (raises KafkaError if none answers with one)."""
        async with self._establishing:
            if not self.established:
                await self._ask_for_producer_id()

    async def _ask_for_producer_id(self) -> None:
        node = self._client.get_random_node()
        if node is None:
            raise KafkaConnectionError("no broker known to ask for a producer id")
        response = await self._client.send(node, InitProducerIdRequest(None, self._transaction_timeout_ms))
        error = for_code(response.error_code)
        if error is not NoError:
            raise error()
        self.producer_id, self.epoch = response.producer_id, response.producer_epoch
        self._sequences.clear()

    def sequence(self, partition: TopicPartition) -> int:
        return self._sequences.get(partition, 0)

    def advance(self, partition: TopicPartition, producer_id: int, records: int) -> None:
        """Records of `producer_id` are written: the partition's next batch follows them (a batch stamped by
        a session since reset changes nothing)."""
        if producer_id == self.producer_id:
            self._sequences[partition] = (self.sequence(partition) + records) % _SEQUENCE_SPACE

    def reset(self) -> None:
        self.producer_id = self.epoch = -1
        self._sequences.clear()


def is_fatal_for_session(error: type[KafkaError]) -> bool:
    """Broker answers after which this producer id's sequences cannot be trusted any more."""
    return error in (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch)
