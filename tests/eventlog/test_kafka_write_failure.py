"""A failed Kafka write becomes LogUnavailable (a 503 at the ingress), whatever aiokafka raised."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError

from processor.errors import LogUnavailable
from processor.eventlog.kafka.log import KafkaEventLog


@pytest.mark.parametrize("error", [KafkaConnectionError(), KafkaTimeoutError(), RequestTimedOutError()])
async def test_an_ordinary_write_failure_is_log_unavailable_and_keeps_the_producer(error: Exception) -> None:
    """A broker outage must not crash the writer: the chaos suite saw a TypeError here end every consumer
    and leave the ingress answering 503 until restarted."""
    log = KafkaEventLog(["127.0.0.1:9"])
    failure = await log._write_failed(None, error)  # type: ignore[arg-type]  # no producer is replaced here
    assert isinstance(failure, LogUnavailable)
    assert not log.healthy()
