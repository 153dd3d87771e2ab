"""A Kafka outage in a consumer's log: one line when the broker becomes unreachable, one when it is back, and
the connection errors in between counted in the metrics instead of logged dozens of times a second."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable

import pytest
from aiokafka.errors import SaslAuthenticationFailed
from prometheus_client.parser import text_string_to_metric_families

from processor import constants as c
from processor.dev.kafka import KafkaBroker
from processor.eventlog.base import LogConsumer, Record
from processor.eventlog.factory import open_event_log
from processor.eventlog.kafka.outage import CONNECTION_ERRORS, PROBE_INTERVAL_S, TRACKER, BrokerOutage
from processor.runtime.metrics import WorkerMetrics
from processor.settings import Settings


async def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _poll_forever(consumer: LogConsumer, received: list[Record]) -> None:
    while True:
        received.extend(await consumer.poll(timeout_s=0.5))


def _counter(name: str) -> float:
    for family in text_string_to_metric_families(WorkerMetrics().exposition().decode()):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} is not exported")


async def test_a_broker_outage_logs_two_lines_and_counts_the_errors(
    private_kafka: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Broker stopped under a polling consumer: many connection errors, one 'unreachable' line, none of
    aiokafka's; broker started again: one 'reachable again' line, and the consumer receives new records."""
    caplog.set_level(logging.INFO)
    # the tracker is process-wide: an earlier test's outage (a broker it stopped, credentials refused on a
    # secured broker) is not this test's
    TRACKER.down_since = None
    settings = Settings(kafka_bootstrap_servers=(private_kafka.bootstrap,), topic_prefix="outage.")
    topic = settings.topic(c.TOPIC_EVENTS)
    async with open_event_log(settings) as log_:
        await log_.ensure_topics([topic], partitions=1)
        consumer = log_.consumer("outage-group", [topic], session_timeout_s=30)
        async with consumer:
            received: list[Record] = []
            poller = asyncio.create_task(_poll_forever(consumer, received))
            try:
                await log_.publish(topic, b"k", b"before")
                await _until(lambda: len(received) == 1, 60, "the first record")
                errors_before, outages_before = TRACKER.errors, TRACKER.outages
                await asyncio.to_thread(private_kafka.stop)
                await _until(lambda: TRACKER.errors >= errors_before + 20, 60, "connection errors during the outage")
                assert TRACKER.down_since is not None
                await asyncio.to_thread(private_kafka.start)
                await _until(lambda: TRACKER.down_since is None, 60, "the broker reachable again")
                await log_.publish(topic, b"k", b"after")
                await _until(lambda: [r.value for r in received] == [b"before", b"after"], 60, "the record after")
            finally:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
    spam = [r for r in caplog.records if r.name.startswith("aiokafka") and str(r.msg).startswith(CONNECTION_ERRORS)]
    assert spam == []
    ours = [r.getMessage() for r in caplog.records if r.name == "processor.eventlog.kafka.outage"]
    assert (
        len(ours) == 2
        and ours[0].startswith("Kafka is unreachable: ")
        and ours[1].startswith("Kafka is reachable again after")
    ), ours
    assert TRACKER.outages == outages_before + 1
    assert _counter("processor_kafka_connection_errors_total") == TRACKER.errors >= errors_before + 20


async def test_a_port_that_accepts_while_clients_still_fail_is_not_back(caplog: pytest.LogCaptureFixture) -> None:
    """A broker shutting down (or starting) accepts TCP connections while its clients' requests still fail:
    the outage is not over until the failures stop for a probe interval, so one outage is two lines, not four.
    The 'broker' is a real listening socket; the clients' failures are aiokafka's log records, fed in."""
    outage = BrokerOutage()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    outage.addresses = (server.sockets[0].getsockname()[:2],)

    def failure() -> logging.LogRecord:
        return logging.LogRecord("aiokafka", logging.ERROR, __file__, 0, "Unable connect to node with id %s: %s",
                                 (1, "KafkaConnectionError"), None)

    caplog.set_level(logging.WARNING, logger="processor.eventlog.kafka.outage")
    try:
        assert outage.filter(failure()) is False
        for _ in range(int(3 * PROBE_INTERVAL_S / 0.2)):  # failing for three probe intervals, port open all along
            await asyncio.sleep(0.2)
            outage.filter(failure())
            assert outage.down_since is not None, "declared back while the clients were still failing"
        await _until(lambda: outage.down_since is None, 30, "the outage to end once the failures stopped")
    finally:
        server.close()
        await server.wait_closed()
    lines = [r.getMessage() for r in caplog.records if r.name == "processor.eventlog.kafka.outage"]
    assert len(lines) == 2 and lines[1].startswith("Kafka is reachable again"), lines
    assert outage.outages == 1


@pytest.mark.parametrize(
    "error",
    [
        SaslAuthenticationFailed("Authentication failed during authentication due to invalid credentials"),
        ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
    ],
    ids=["sasl", "tls"],
)
def test_a_broker_refusing_the_client_is_not_called_unreachable(
    caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    """A wrong password or an untrusted certificate fails every connection as an outage does, but the broker is
    there: the one line says it refuses this client and where to look, with aiokafka's words for why."""
    outage = BrokerOutage()
    caplog.set_level(logging.WARNING, logger="processor.eventlog.kafka.outage")
    record = logging.LogRecord("aiokafka", logging.ERROR, __file__, 0, 'Unable connect to "%s:%s": %s',
                               ("127.0.0.1", 9093, error), None)
    assert outage.filter(record) is False
    lines = [r.getMessage() for r in caplog.records if r.name == "processor.eventlog.kafka.outage"]
    assert len(lines) == 1 and lines[0].startswith("Kafka refuses this client (check its TLS and SASL settings"), lines
    assert str(error) in lines[0]
