"""deploy/validate.sh validates every deployment artefact offline, and each of its checks rejects a broken one.

The first run installs helm, kubeconform, hadolint, rulecheck and the schemas into .cache/tools (minutes when
cold, seconds afterwards), hence the longer timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm/claimable-sandbox-processor"


def _validate(**paths: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **{name: str(path) for name, path in paths.items()}}
    return subprocess.run(
        ["bash", str(DEPLOY / "validate.sh")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=1500,
        check=False,
    )


def _failed(output: str) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^FAIL\s+(.*)$", output, re.M)}


@pytest.mark.timeout(1800)
async def test_every_artefact_is_valid() -> None:
    """The chart (three value sets), KafkaTopics, compose file, Dockerfile, alerts and dashboard all pass."""
    result = _validate()
    assert result.returncode == 0, result.stderr
    assert "all deployment artefacts valid" in result.stderr
    for check in (
        "kubeconform (default",
        "kubeconform (full",
        "KafkaTopics equal processor/eventlog/kafka/topics.py",
        "compose file",
        "Dockerfile (hadolint",
        "alert rules",
        "PrometheusRule groups",
        "dashboard + alert queries",
    ):
        assert re.search(rf"^ok\s+{re.escape(check)}", result.stderr, re.M), f"{check} did not run"


@pytest.mark.timeout(1800)
async def test_each_check_rejects_a_broken_artefact(tmp_path: Path) -> None:
    """A typo in a Deployment or KafkaTopic, a bad compose file, a lax Dockerfile, bad PromQL and an unknown
    metric in the dashboard each make validate.sh fail, naming the check."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    deployments = chart / "templates/deployments.yaml"
    deployments.write_text(deployments.read_text().replace("  revisionHistoryLimit: 5", "  revisionHistroyLimit: 5"))
    topics = chart / "templates/kafkatopics.yaml"
    topics.write_text(topics.read_text().replace("  replicas: {{", "  replica: {{"))
    # a hand edit of the generated topic file: no longer what processor/eventlog/kafka/topics.py says
    spec_file = chart / "files/topics.yaml"
    spec_file.write_text(spec_file.read_text().replace("partitions: 12", "partitions: 6", 1))

    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        (DEPLOY / "docker-compose.yml")
        .read_text()
        .replace(
            "    restart: unless-stopped\n    environment:\n      KAFKA_NODE_ID",
            "    restart_policy: always\n    environment:\n      KAFKA_NODE_ID",
        )
        .replace(
            "      postgres:\n        condition: service_healthy",
            "      postgress:\n        condition: service_healthy",
        )
    )

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        (DEPLOY / "Dockerfile")
        .read_text()
        .replace(
            "FROM ${PYTHON_IMAGE} AS runtime",
            "FROM python:latest AS runtime\nRUN apt-get update && apt-get install -y curl",
        )
    )

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        (CHART / "files/prometheus-rules.yaml")
        .read_text()
        .replace("expr: max(processor_consumer_lag) > 1000", "expr: max(processor_consumer_lag > 1000")
    )

    dashboard = tmp_path / "dashboard.json"
    dashboard.write_text(
        (CHART / "files/grafana-dashboard.json")
        .read_text()
        .replace("max(processor_sandboxes_stuck)", "max(processor_sandboxes_stuck_total)")
    )

    result = _validate(
        CHART_DIR=chart, COMPOSE_FILE=compose, DOCKERFILE=dockerfile, RULES_FILE=rules, DASHBOARD_FILE=dashboard
    )
    assert result.returncode == 1
    failed = _failed(result.stderr)
    for check in (
        "kubeconform (default",
        "compose file",
        "Dockerfile (hadolint",
        "alert rules",
        "dashboard + alert queries",
    ):
        assert any(name.startswith(check) for name in failed), f"{check} accepted a broken artefact"
    assert "revisionHistroyLimit" in result.stderr, "the Deployment typo is named"
    assert re.search(r"KafkaTopic .*replica", result.stderr), "the Strimzi schema rejects the KafkaTopic typo"
    assert "postgress" in result.stderr and "restart_policy" in result.stderr
    assert "DL3007" in result.stderr, "hadolint flags the unpinned base image"
    assert "processor_sandboxes_stuck_total" in result.stderr
