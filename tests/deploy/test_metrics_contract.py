"""The metric contract in deploy/README.md, which alerts and the dashboard use, matches what the code exports."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: in the contract (an alert and a dashboard panel use it) but not exported by any process yet; when the code
#: starts exporting one, the test below fails so the entry is removed here
NOT_YET_EXPORTED: set[str] = set()


def _contract() -> dict[str, str]:
    rows = re.findall(
        r"^\|\s*`(processor_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|",
        (ROOT / "deploy/README.md").read_text(),
        re.M,
    )
    return dict(rows)


def _declared() -> set[str]:
    """Metric names passed to prometheus_client in the processor package (`_total` is added for counters)."""
    names: set[str] = set()
    for path in (ROOT / "processor").rglob("*.py"):
        for name in re.findall(r"""["'](processor_[a-z0-9_]+)["']""", path.read_text()):
            names.add(name.removesuffix("_total"))
    return names


async def test_contract_metrics_are_exported_by_the_code() -> None:
    """Every metric of the contract is declared somewhere in processor/ (an alert on a missing one never fires)."""
    contract = _contract()
    assert len(contract) >= 9
    declared = _declared()
    missing = {name for name in contract if name.removesuffix("_total") not in declared}
    assert missing == NOT_YET_EXPORTED, f"contract metrics not exported: {sorted(missing)}"


async def test_contract_lists_the_metrics_the_issue_names() -> None:
    """The names downstream dashboards were promised are all in the contract with their types."""
    contract = _contract()
    assert contract["processor_ingress_deliveries_total"] == "counter"
    assert contract["processor_ingress_request_duration_seconds"] == "histogram"
    assert contract["processor_consumer_lag"] == "gauge"
    assert contract["processor_sandboxes_stuck"] == "gauge"
    for name in (
        "processor_ingress_bytes_total",
        "processor_consumer_events_total",
        "processor_transitions_total",
        "processor_dlq_records_total",
        "processor_stripe_requests_total",
    ):
        assert contract[name] == "counter"


async def test_contract_names_follow_prometheus_conventions() -> None:
    """Counters end in `_total` and nothing else does; histograms name their unit (`_seconds`, `_bytes`)."""
    contract = _contract()
    wrong = {name for name, kind in contract.items() if name.endswith("_total") != (kind == "counter")}
    units = ("_seconds", "_bytes")
    wrong |= {name for name, kind in contract.items() if kind == "histogram" and not name.endswith(units)}
    assert wrong == set()
