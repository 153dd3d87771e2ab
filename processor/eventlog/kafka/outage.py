"""Broker outages in the log as two lines, not thousands: one when Kafka becomes unreachable, one when it is back.

While a broker is down, every aiokafka client retries its connections many times a second and logs an error
each time (`Unable connect to node with id 1: ...`, 40-60 a second per consumer). A logging filter on aiokafka's
loggers lets the first of these through as one warning of ours, counts and drops the rest, and probes the
bootstrap addresses (a TCP connect, once a second) to say when the broker is reachable again. The counts are
Prometheus counters: `processor_kafka_connection_errors_total` and `processor_kafka_outages_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: aiokafka's loggers that report failed connections and the requests that failed with them
AIOKAFKA_LOGGERS = (
    "aiokafka",  # aiokafka/client.py logs as "aiokafka"
    "aiokafka.admin.client",
    "aiokafka.conn",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.sender",
)
#: how those messages start (their format strings, so the test is cheap and independent of the arguments)
CONNECTION_ERRORS = (
    "Unable connect to",
    "Unable to update metadata",
    "Unable to request metadata",
    "Failed fetch messages from",
    "Failed fetch offsets from",
)
#: messages that are a connection error only when the node was not reachable (a coordinator still electing
#: itself right after start-up reports GroupCoordinatorNotAvailable with the same words)
NODE_ERRORS = ("Group Coordinator Request failed", "Heartbeat send request failed", "Got error produce response")
NOT_REACHABLE = ("NodeNotReadyError", "KafkaConnectionError")
#: errors of a broker that answers but will not take this client: a TLS handshake it failed (an ssl.SSLError) or
#: SASL credentials it refused; by name, so this module needs no aiokafka import
REFUSALS = ("SaslAuthenticationFailed", "AuthenticationFailedError", "UnsupportedSaslMechanismError",
            "IllegalSaslStateError")
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0


class BrokerOutage(logging.Filter):
    """The filter and the outage state of one process (all its Kafka clients share one broker list)."""

    def __init__(self) -> None:
        super().__init__()
        self.addresses: tuple[tuple[str, int], ...] = ()
        #: connection errors aiokafka reported (one shown per outage, the rest only counted)
        self.errors = 0
        self.outages = 0
        self.down_since: float | None = None
        self._probe: asyncio.Task[None] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not _connection_error(record):
            return True
        self.errors += 1
        if self._probe is not None and self._probe.cancelled():
            # the event loop that watched the last outage ended with its clients: this one starts afresh
            self.down_since, self._probe = None, None
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.outages += 1
            log.warning(
                "%s: %s; further connection errors are counted (processor_kafka_connection_errors_total), not"
                " logged, until it is back",
                "Kafka refuses this client (check its TLS and SASL settings, PROCESSOR_KAFKA_*)" if _refusal(record)
                else "Kafka is unreachable",
                record.getMessage(),
            )
        self._ensure_probe()
        return False

    def _ensure_probe(self) -> None:
        """Probe from the running loop; a probe of a loop that ended (tests run several) is started anew."""
        if self._probe is not None and not self._probe.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # logged outside a loop: the next record from within one starts the probe
            return
        self._probe = loop.create_task(self._until_reachable(), name="kafka outage probe")

    async def _until_reachable(self) -> None:
        while True:
            errors = self.errors
            if await self._accepts_connections():
                # a broker shutting down still accepts connections for a moment, and one starting accepts them
                # before it serves: it is back only once the clients stopped failing for a probe interval
                await asyncio.sleep(PROBE_INTERVAL_S)
                if self.errors == errors:
                    self._back()
                    return
                continue
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def _accepts_connections(self) -> bool:
        for host, port in self.addresses:
            with contextlib.suppress(OSError, TimeoutError):
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT_S)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return True
        return False

    def _back(self) -> None:
        if self.down_since is None:
            return
        log.warning(
            "Kafka is reachable again after %.1fs (%d connection errors in all)",
            time.monotonic() - self.down_since,
            self.errors,
        )
        self.down_since = None


def _connection_error(record: logging.LogRecord) -> bool:
    if not isinstance(record.msg, str):
        return False
    if record.msg.startswith(CONNECTION_ERRORS):
        return True
    return record.msg.startswith(NODE_ERRORS) and any(name in record.getMessage() for name in NOT_REACHABLE)


def _refusal(record: logging.LogRecord) -> bool:
    """Whether the error aiokafka logged (an argument of its record) is the broker refusing us, not its absence."""
    args = record.args if isinstance(record.args, tuple) else ()
    return any(isinstance(arg, ssl.SSLError) or type(arg).__name__ in REFUSALS for arg in args)


class OutageCollector(Collector):
    """The outage counts as Prometheus counters, for any registry that registers this collector."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        errors = CounterMetricFamily(
            "processor_kafka_connection_errors",
            "Connection errors aiokafka reported (logged once per outage, the rest only counted here).",
        )
        errors.add_metric([], TRACKER.errors)
        outages = CounterMetricFamily("processor_kafka_outages", "Times Kafka became unreachable from this process.")
        outages.add_metric([], TRACKER.outages)
        yield errors
        yield outages


#: the one tracker of this process
TRACKER = BrokerOutage()


def install(bootstrap_servers: Sequence[str]) -> BrokerOutage:
    """Filter aiokafka's connection errors through the process's tracker, probing `bootstrap_servers`."""
    addresses = []
    for server in bootstrap_servers:
        host, _, port = server.strip().rpartition(":")
        if host and port.isdigit():
            addresses.append((host.strip("[]"), int(port)))
    TRACKER.addresses = tuple(addresses)
    for name in AIOKAFKA_LOGGERS:
        logger = logging.getLogger(name)
        if TRACKER not in logger.filters:
            logger.addFilter(TRACKER)
    return TRACKER
