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


def _counter(registry: CollectorRegistry, name: str, documentation: str, *labels: str) -> Counter:
    return Counter(name, documentation, labels, registry=registry)


def _gauge(registry: CollectorRegistry, name: str, documentation: str, *labels: str) -> Gauge:
    return Gauge(name, documentation, labels, registry=registry)


class WorkerMetrics:
    """Events by outcome, transitions, DLQ records, Stripe requests, consumer lag and relay progress."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        #: the Stripe budget's metrics: every Stripe client of the process reports here
        self.budget = BudgetMetrics(registry)
        self.events = _counter(
            registry, "processor_consumer_events_total",
            "Records of stripe.events handled, by outcome (applied, stale, duplicate, notice, flag, unmatched,"
            " ignored, dead_lettered).", "outcome")
        self.transitions = _counter(
            registry, "processor_transitions_total", "Lifecycle states entered, by target state.", "to_state")
        self.dlq = _counter(
            registry, "processor_dlq_records_total", "Records sent to stripe.events.dlq, by error class.",
            "error_class")
        self.stripe_requests = _counter(
            registry, "processor_stripe_requests_total", "Stripe API responses by HTTP status ('error': no response).",
            "status")
        self.sandbox_fetches = _counter(
            registry, "processor_consumer_sandbox_fetches_total",
            "Sandboxes the consumer settled per batch, by how: fetched from Stripe, or not_needed (the events and"
            " the stored state told the state).", "how")
        self.retries = _counter(
            registry, "processor_consumer_retries_total", "Partitions paused for a retry, by error class.",
            "error_class")
        self.lag = _gauge(
            registry, "processor_consumer_lag", "Records of stripe.events not yet committed by this consumer's group.")
        self.sandboxes_stuck = _gauge(
            registry, "processor_sandboxes_stuck",
            "Sandboxes in an intermediate state (claimed .. installed) not updated for a day.")
        self.relay_published = _counter(
            registry, "processor_relay_published_total", "Outbox messages published by the relay, by topic.", "topic")
        self.outbox_pending = _gauge(
            registry, "processor_outbox_pending", "Outbox rows not yet published (as of the relay's last look).")
        self.group_lag = _gauge(
            registry, "processor_consumer_group_lag",
            "Records of stripe.events past the lifecycle group's committed offset, per partition (the whole"
            " group, as `processor status` reports it).", "partition")
        self.reconcile_repairs = _counter(
            registry, "processor_reconcile_repairs_total",
            "Changes a reconcile pass made that webhooks should have made (lost webhooks: alert on any), by kind"
            " (state, flag).", "kind")
        self.worker_restarts = _counter(
            registry, "processor_worker_restarts_total",
            "Times `processor run` restarted its worker after it failed (the log says why).")
        # the process's Kafka outage counts (processor.eventlog.kafka.outage), shown with the worker's metrics
        registry.register(OutageCollector())
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

    def observe_stripe(self, status: str) -> None:
        self.stripe_requests.labels(status=status).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
