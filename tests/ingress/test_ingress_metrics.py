"""The ingress's metrics: what a scrape shows after deliveries were answered."""

from __future__ import annotations

from prometheus_client import generate_latest

from processor.ingress.metrics import UNKNOWN_TYPE, IngressMetrics


async def test_a_scrape_shows_every_answered_delivery_at_once() -> None:
    """Outcome and type counts, latency buckets and bytes are visible right after the answer, not later."""
    metrics = IngressMetrics()
    metrics.observe("accepted", "account.application.authorized", 0.004, 100)
    metrics.observe("signature_mismatch", None, 0.0005, 20)
    text = generate_latest(metrics.registry).decode()
    assert "processor_ingress_bytes_total 120.0" in text
    assert 'processor_ingress_request_duration_seconds_bucket{le="0.001"} 1.0' in text
    assert 'processor_ingress_request_duration_seconds_bucket{le="0.005"} 2.0' in text
    assert 'event_type="account.application.authorized",outcome="accepted"} 1.0' in text
    assert f'event_type="{UNKNOWN_TYPE}",outcome="signature_mismatch"}} 1.0' in text
    assert metrics.exposition() == generate_latest(metrics.registry)


async def test_event_types_outside_the_known_set_share_one_label() -> None:
    """3,000 signed deliveries of random types add one `other` series, not 3,000: the exposition stays small."""
    metrics = IngressMetrics()
    metrics.observe("accepted", "v2.core.claimable_sandbox.claimed", 0.001, 10)
    before = len(metrics.exposition())
    for i in range(3000):
        metrics.observe("accepted", f"attacker.chosen.{i}", 0.001, 10)
    text = metrics.exposition().decode()
    assert 'event_type="other"' in text and "attacker.chosen" not in text
    assert 'processor_ingress_deliveries_total{event_type="other",outcome="accepted"} 3000.0' in text
    assert len(text) < before + 500
