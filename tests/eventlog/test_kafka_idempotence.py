"""The producer's idempotence against the real broker: a batch the broker wrote but whose answer was lost is
resent, and the broker keeps one copy because the resend carries the same producer id and sequence."""

from __future__ import annotations

import uuid
from typing import Any

from aiokafka.errors import RequestTimedOutError
from aiokafka.protocol.produce import ProduceRequest

from processor.eventlog.base import TopicPartition
from processor.eventlog.kafka.log import KafkaEventLog


async def test_a_batch_resent_after_a_lost_answer_is_written_once(kafka_bootstrap: str) -> None:
    async with KafkaEventLog([kafka_bootstrap]) as log:
        topic = f"idempotence-{uuid.uuid4().hex[:8]}"
        await log.ensure_topics([topic], partitions=1)
        await log.publish(topic, b"k", b"before")
        client = log._producer.client  # type: ignore[union-attr]
        real_send = client.send
        lost: list[Any] = []

        async def send_losing_one_answer(node_id: int, request: Any, **options: Any) -> Any:
            response = await real_send(node_id, request, **options)
            if isinstance(request, ProduceRequest) and not lost:
                lost.append(response)
                raise RequestTimedOutError()  # the broker wrote the batch; its answer never arrived
            return response

        client.send = send_losing_one_answer
        try:
            resent = await log.publish(topic, b"k", b"once")
        finally:
            client.send = real_send
        await log.publish(topic, b"k", b"after")

        assert lost, "the fault was not injected"
        stored = await log.read(TopicPartition(topic, 0), 0, 10)
        assert [record.value for record in stored] == [b"before", b"once", b"after"]
        assert resent.offset == 1
