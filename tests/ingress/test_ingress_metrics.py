"""The ingress's metrics tally deliveries locally and add them in bulk: the exposition must be exactly what
observing every delivery one by one through prometheus_client gives."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from processor.ingress.metrics import FLUSH_INTERVAL_S, LATENCY_BUCKETS, UNKNOWN_TYPE, IngressMetrics

OUTCOMES = ["accepted", "signature_mismatch", "body_too_large"]
TYPES = ["v2.core.claimable_sandbox.claimed", "account.application.authorized", None]


def reference(deliveries: list[tuple[str, str | None, float, int]]) -> bytes:
    """The same metrics fed one observation at a time, the way prometheus_client documents."""
    registry = CollectorRegistry(auto_describe=True)
    counter = Counter(
        "processor_ingress_deliveries",
        "Webhook deliveries answered, by outcome (accepted or a rejection reason) and event type",
        ("outcome", "event_type"),
        registry=registry,
    )
    histogram = Histogram(
        "processor_ingress_latency_seconds",
        "Time from request start to the answer of POST /webhooks/stripe",
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    received = Counter("processor_ingress_bytes", "Webhook body bytes read", registry=registry)
    for outcome, event_type, seconds, size in deliveries:
        counter.labels(outcome, event_type or UNKNOWN_TYPE).inc()
        histogram.observe(seconds)
        received.inc(size)
    return generate_latest(registry)


def samples(exposition: bytes) -> dict[str, float]:
    """Sample name with labels -> value, without the `_created` timestamps (they differ between registries)."""
    parsed = {}
    for line in exposition.decode().splitlines():
        if line.startswith("#") or "_created" in line:
            continue
        name, value = line.rsplit(" ", 1)
        parsed[name] = float(value)
    return parsed


async def test_bulk_tallies_expose_exactly_what_one_by_one_observation_does() -> None:
    rng = random.Random(7)
    # latencies on, just below and just above every bucket bound, plus the +Inf bucket
    edges = [b + d for b in LATENCY_BUCKETS for d in (-1e-9, 0.0, 1e-9)] + [30.0, 0.0]
    deliveries = [
        (rng.choice(OUTCOMES), rng.choice(TYPES), rng.choice([*edges, rng.random() / 10]), rng.randrange(0, 4096))
        for _ in range(3000)
    ]
    metrics = IngressMetrics()
    for delivery in deliveries[:1000]:
        metrics.observe(*delivery)
    metrics.flush()  # a flush in the middle must not lose or double anything
    for delivery in deliveries[1000:]:
        metrics.observe(*delivery)
    ours, theirs = samples(metrics.exposition()), samples(reference(deliveries))
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        # counts are exact; the latency sum differs in the last bits only, being added in another order
        assert ours[name] == pytest.approx(value, rel=1e-12) if name.endswith("_sum") else ours[name] == value, name


async def test_tallies_reach_the_metrics_on_their_own_within_the_flush_interval() -> None:
    """In multiprocess mode another worker may answer the scrape: this one must flush without being asked."""
    metrics = IngressMetrics()
    metrics.observe("accepted", "account.application.authorized", 0.004, 100)
    assert "processor_ingress_bytes_total 0.0" in generate_latest(metrics.registry).decode()  # still local
    await asyncio.sleep(FLUSH_INTERVAL_S + 0.2)
    text = generate_latest(metrics.registry).decode()
    assert "processor_ingress_bytes_total 100.0" in text
    assert 'processor_ingress_latency_seconds_bucket{le="0.005"} 1.0' in text
    assert 'outcome="accepted"} 1.0' in text
