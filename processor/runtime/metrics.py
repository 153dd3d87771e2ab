"""Prometheus metrics of the lifecycle worker (consumer + relay), in a registry of its own per worker.

The registry also holds the standard `process_*` (CPU, memory, descriptors) and `python_*` (GC, version)
metrics, so every process that runs a worker (`processor run`, `consume`, `relay`) exports them once, next to
its own; `processor run` serves them with the ingress's on one `/metrics`.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from processor.eventlog.kafka.outage import OutageCollector
from processor.stripe_api.budget import BudgetMetrics


class WorkerMetrics:
    """Events by outcome, transitions, DLQ records, Stripe requests, consumer lag and relay progress."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        #: the Stripe budget's metrics: every Stripe client of the process reports here
        self.budget = BudgetMetrics(self.registry)
        self.events = Counter(
            "processor_consumer_events_total",
            "Records of stripe.events handled, by outcome (applied, stale, duplicate, notice, flag, unmatched,"
            " ignored, dead_lettered).",
            ["outcome"],
            registry=self.registry,
        )
        self.transitions = Counter(
            "processor_transitions_total",
            "Lifecycle states entered, by target state.",
            ["to_state"],
            registry=self.registry,
        )
        self.dlq = Counter(
            "processor_dlq_records_total",
            "Records sent to stripe.events.dlq, by error class.",
            ["error_class"],
            registry=self.registry,
        )
        self.stripe_requests = Counter(
            "processor_stripe_requests_total",
            "Stripe API responses by HTTP status ('error': no response).",
            ["status"],
            registry=self.registry,
        )
        self.sandbox_fetches = Counter(
            "processor_consumer_sandbox_fetches_total",
            "Sandboxes the consumer settled per batch, by how: fetched from Stripe, or not_needed (the events and"
            " the stored state told the state).",
            ["how"],
            registry=self.registry,
        )
        self.retries = Counter(
            "processor_consumer_retries_total",
            "Partitions paused for a retry, by error class.",
            ["error_class"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "processor_consumer_lag",
            "Records of stripe.events not yet committed by this consumer's group.",
            registry=self.registry,
        )
        self.sandboxes_stuck = Gauge(
            "processor_sandboxes_stuck",
            "Sandboxes in an intermediate state (claimed .. installed) not updated for a day.",
            registry=self.registry,
        )
        self.relay_published = Counter(
            "processor_relay_published_total",
            "Outbox messages published by the relay, by topic.",
            ["topic"],
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "processor_outbox_pending",
            "Outbox rows not yet published (as of the relay's last look).",
            registry=self.registry,
        )

        self.group_lag = Gauge(
            "processor_consumer_group_lag",
            "Records of stripe.events past the lifecycle group's committed offset, per partition (the whole"
            " group, as `processor status` reports it).",
            ["partition"],
            registry=self.registry,
        )

        self.reconcile_repairs = Counter(
            "processor_reconcile_repairs_total",
            "Changes a reconcile pass made that webhooks should have made (lost webhooks: alert on any), by kind"
            " (state, flag).",
            ["kind"],
            registry=self.registry,
        )

        self.worker_restarts = Counter(
            "processor_worker_restarts_total",
            "Times `processor run` restarted its worker after it failed (the log says why).",
            registry=self.registry,
        )

        # the process's Kafka outage counts (processor.eventlog.kafka.outage), shown with the worker's metrics
        self.registry.register(OutageCollector())
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def observe_stripe(self, status: str) -> None:
        self.stripe_requests.labels(status=status).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
