"""Prometheus metrics of one ingress app, in a registry of its own so several apps can live in one process.

With several worker processes, set PROMETHEUS_MULTIPROC_DIR (the `processor ingress` command does) and
`/metrics` aggregates every worker's values instead of showing whichever worker answered the scrape.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from processor.consumer.inbound import ACCOUNT_TYPES, EXPIRING, OBSERVATION_TYPES

#: label value for deliveries rejected before their event type was known
UNKNOWN_TYPE = "unknown"
#: label value for every event type outside LABELLED_TYPES: the type comes from the (signed) body, and a
#: label per sender-chosen string would let anyone holding the secret grow the exposition without bound
OTHER_TYPE = "other"
#: the event types the consumer acts on, each with a series of its own
LABELLED_TYPES = frozenset(OBSERVATION_TYPES | ACCOUNT_TYPES | {EXPIRING})

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


class IngressMetrics:
    """Deliveries by outcome and event type, answer latency, and bytes received."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(
            "processor_ingress_deliveries",
            "Webhook deliveries answered, by outcome (accepted or a rejection reason) and event type",
            ("outcome", "event_type"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "processor_ingress_request_duration_seconds",
            "Time from request start to the answer of POST /webhooks/stripe",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.bytes = Counter("processor_ingress_bytes", "Webhook body bytes read", registry=self.registry)
        #: the labelled child of `deliveries` per (outcome, event type label), looked up once: `labels()` takes a
        #: lock and builds its key on every call. Both labels come from closed sets, so this stays small.
        self._delivery_counters: dict[tuple[str, str], Counter] = {}

    def add_process_metrics(self) -> None:
        """Add the standard `process_*` (CPU, memory, descriptors) and `python_*` metrics of this process, for a
        process that serves this app alone (`processor ingress` with one worker; `processor run` has them with its
        worker's). Not in multiprocess mode: prometheus_client cannot sum them over workers, and a scrape would
        show whichever worker answered it."""
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def observe(self, outcome: str, event_type: str | None, seconds: float, size: int) -> None:
        """Record one answered delivery (in multiprocess mode it lands in this worker's files at once)."""
        label = UNKNOWN_TYPE if event_type is None else event_type if event_type in LABELLED_TYPES else OTHER_TYPE
        counter = self._delivery_counters.get((outcome, label))
        if counter is None:
            counter = self._delivery_counters[outcome, label] = self.deliveries.labels(outcome, label)
        counter.inc()
        self.latency.observe(seconds)
        self.bytes.inc(size)

    def exposition(self) -> bytes:
        """The text format for `/metrics`: this app's values, or all workers' in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
