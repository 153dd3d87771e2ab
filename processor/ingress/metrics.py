"""Prometheus metrics of one ingress app, in a registry of its own so several apps can live in one process.

With several worker processes, set PROMETHEUS_MULTIPROC_DIR (the `processor ingress` command does) and
`/metrics` aggregates every worker's values instead of showing whichever worker answered the scrape.
"""

from __future__ import annotations

import asyncio
import bisect
import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

#: label value for deliveries rejected before their event type was known
UNKNOWN_TYPE = "unknown"

#: webhook answers should take milliseconds; the top buckets catch a slow log up to the publish timeout
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


#: longest a delivery's figures wait in the worker before reaching the exposition (multiprocess mode; a
#: single process also brings them up to date whenever it is scraped)
FLUSH_INTERVAL_S = 1.0


class IngressMetrics:
    """Deliveries by outcome and event type, answer latency, and bytes received.

    Each delivery is tallied in plain Python numbers and the tallies are added to the Prometheus metrics in
    bulk: prometheus_client takes a lock and walks the buckets on every call, which cost a busy ingress about
    3 us per delivery, as much as verifying its signature. The bulk add is exact, sums included
    (test_ingress_metrics proves it equal to observing one by one).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(
            "processor_ingress_deliveries",
            "Webhook deliveries answered, by outcome (accepted or a rejection reason) and event type",
            ("outcome", "event_type"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "processor_ingress_latency_seconds",
            "Time from request start to the answer of POST /webhooks/stripe",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.bytes = Counter("processor_ingress_bytes", "Webhook body bytes read", registry=self.registry)
        # the tallies since the last flush; the +Inf bucket is the last
        self._counts: dict[tuple[str, str | None], int] = {}
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._seconds = 0.0
        self._bytes = 0
        self._flush_due: asyncio.TimerHandle | None = None

    def observe(self, outcome: str, event_type: str | None, seconds: float, size: int) -> None:
        """Record one answered delivery (on the event loop that serves the app)."""
        key = (outcome, event_type)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # Prometheus buckets are `le`
        self._seconds += seconds
        self._bytes += size
        if self._flush_due is None:
            self._flush_due = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self.flush)

    def flush(self) -> None:
        """Add the tallies to the Prometheus metrics (and so to this worker's multiprocess files)."""
        if self._flush_due is not None:
            self._flush_due.cancel()
            self._flush_due = None
        counts, self._counts = self._counts, {}
        for (outcome, event_type), n in counts.items():
            self.deliveries.labels(outcome, event_type or UNKNOWN_TYPE).inc(n)
        if any(self._buckets):
            # Histogram has no public bulk update; `_buckets` (one value per bucket, not cumulative) and `_sum`
            # are how prometheus_client stores it, in both modes
            for value, n in zip(self.latency._buckets, self._buckets, strict=True):
                if n:
                    value.inc(n)
            self.latency._sum.inc(self._seconds)
            self._buckets = [0] * len(self._buckets)
            self._seconds = 0.0
        if self._bytes:
            self.bytes.inc(self._bytes)
            self._bytes = 0

    def exposition(self) -> bytes:
        """The text format for `/metrics`: this app's values, or all workers' in multiprocess mode."""
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
