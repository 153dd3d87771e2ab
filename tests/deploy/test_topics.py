"""processor/eventlog/kafka/topics.py is the one source of topic settings, and `processor topics create|show`
honours it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from processor import constants as c
from processor.cli.topics import write_spec
from processor.eventlog.kafka.admin import compare, ensure_topics
from processor.eventlog.kafka.topics import TOPICS, spec_document, topic_specs
from processor.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART_TOPICS = ROOT / "deploy/helm/claimable-sandbox-processor/files/topics.yaml"
COMPOSE = ROOT / "deploy/docker-compose.yml"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_"))}
    return subprocess.run(
        [sys.executable, "-m", "processor", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        cwd=ROOT,
        timeout=120,
        check=False,
    )


async def test_every_topic_has_one_spec_with_production_durability() -> None:
    """Each topic of constants.ALL_TOPICS has a spec: replication 3, min.insync.replicas 2, sane retention."""
    assert tuple(spec.name for spec in TOPICS) == c.ALL_TOPICS
    for spec in TOPICS:
        assert spec.replication_factor == 3
        assert spec.config["min.insync.replicas"] == "2"
        if spec.name == c.TOPIC_STATE:
            assert spec.config["cleanup.policy"] == "compact"
            assert "retention.ms" not in spec.config
        else:
            assert spec.config["cleanup.policy"] == "delete"
            assert int(spec.config["retention.ms"]) >= 7 * 24 * 3600 * 1000


async def test_events_topic_accepts_the_largest_body_the_ingress_accepts() -> None:
    """A 1 MiB webhook body plus key and headers fits stripe.events and the DLQ (Kafka's default would not)."""
    for spec in TOPICS:
        if spec.name in (c.TOPIC_EVENTS, c.TOPIC_DLQ):
            assert int(spec.config["max.message.bytes"]) > c.DEFAULT_MAX_BODY_BYTES + 64 * 1024


async def test_smaller_cluster_lowers_min_insync_replicas() -> None:
    """With one broker, min.insync.replicas drops to 1 so acks=all writes still succeed."""
    for spec in topic_specs(replication_factor=1, partitions=2):
        assert (spec.replication_factor, spec.partitions, spec.config["min.insync.replicas"]) == (1, 2, "1")
    assert TOPICS[0].replication_factor == 3, "the canonical specs are not changed"


async def test_chart_topics_file_is_generated_from_the_specs() -> None:
    """The Helm chart's files/topics.yaml is exactly what `processor topics show --format yaml` prints."""
    assert yaml.safe_load(CHART_TOPICS.read_text()) == spec_document()
    result = _cli("topics", "show", "--format", "yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == CHART_TOPICS.read_text(), "regenerate files/topics.yaml (deploy/README.md)"


async def test_show_prints_json_with_the_prefix() -> None:
    """`processor topics show` prints machine-readable specs with the configured prefix applied."""
    result = _cli("topics", "show", env={"PROCESSOR_TOPIC_PREFIX": "staging."})
    assert result.returncode == 0, result.stderr
    names = [topic["name"] for topic in json.loads(result.stdout)["topics"]]
    assert names == [f"staging.{name}" for name in c.ALL_TOPICS]


async def test_compose_creates_topics_with_the_cli_not_its_own_settings() -> None:
    """The compose topic job runs `processor topics create`; no topic setting is written in the compose file."""
    compose = yaml.safe_load(COMPOSE.read_text())
    command = compose["services"]["topics"]["command"]
    assert command[:2] == ["topics", "create"]
    assert "--partitions" not in command
    text = COMPOSE.read_text()
    assert "kafka-topics" not in text and "retention.ms" not in text and "cleanup.policy" not in text


async def test_create_without_kafka_exits_2_with_a_hint() -> None:
    """With no Kafka configured, `topics create` explains what to set and exits 2."""
    result = _cli("topics", "create")
    assert result.returncode == 2
    assert "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS" in result.stderr


async def test_compare_reports_every_difference() -> None:
    """Drift lists fewer partitions, another replication factor and each differing config value."""
    spec = TOPICS[0]
    assert compare(spec, "t", spec.partitions, 3, dict(spec.config)) == ()
    drift = compare(spec, "t", 4, 1, {**spec.config, "retention.ms": "1"})
    assert len(drift) == 3
    assert any("4 partitions" in line for line in drift)
    assert any("replication factor 1" in line for line in drift)
    assert any("retention.ms=1" in line for line in drift)


async def test_write_spec_yaml_round_trips() -> None:
    """The YAML form parses back to the same document other tools consume."""
    import io

    out = io.StringIO()
    write_spec(out, "yaml", TOPICS, "p.")
    assert yaml.safe_load(out.getvalue()) == spec_document(TOPICS, "p.")


async def test_ensure_topics_creates_then_is_idempotent(kafka_settings: Settings) -> None:
    """On a real broker: the first run creates every topic with its configs, the second finds them unchanged."""
    bootstrap = kafka_settings.kafka_bootstrap_servers
    prefix = kafka_settings.topic_prefix
    specs = topic_specs(replication_factor=1, partitions=2)
    first = await ensure_topics(bootstrap, specs, prefix)
    assert [(o.name, o.action) for o in first] == [(prefix + name, "created") for name in c.ALL_TOPICS]
    second = await ensure_topics(bootstrap, specs, prefix)
    assert [(o.action, o.drift) for o in second] == [("exists", ())] * len(c.ALL_TOPICS)

    admin = AIOKafkaAdminClient(bootstrap_servers=list(bootstrap))
    await admin.start()
    try:
        state = prefix + c.TOPIC_STATE
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, state)])
        configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
        described = await admin.describe_topics([state])
    finally:
        await admin.close()
    assert configs["cleanup.policy"] == "compact"
    assert configs["min.insync.replicas"] == "1"
    assert len(described[0]["partitions"]) == 2


async def test_ensure_topics_reports_drift_and_never_alters(kafka_settings: Settings) -> None:
    """A topic created with fewer partitions is reported as drift and left as it is."""
    bootstrap = kafka_settings.kafka_bootstrap_servers
    prefix = kafka_settings.topic_prefix
    await ensure_topics(bootstrap, topic_specs(replication_factor=1, partitions=1), prefix)
    outcomes = await ensure_topics(bootstrap, topic_specs(replication_factor=1, partitions=3), prefix)
    assert all(o.action == "exists" for o in outcomes)
    assert all(any("1 partitions, spec wants 3" in line for line in o.drift) for o in outcomes)
    again = await ensure_topics(bootstrap, topic_specs(replication_factor=1, partitions=3), prefix)
    assert again == outcomes, "nothing was altered by the previous run"


async def test_create_cli_against_a_real_broker(kafka_settings: Settings) -> None:
    """`processor topics create --bootstrap ...` creates the topics, prints them, and exits 0 on a re-run."""
    env = {"PROCESSOR_TOPIC_PREFIX": kafka_settings.topic_prefix}
    args = (
        "topics",
        "create",
        "--bootstrap",
        kafka_settings.kafka_bootstrap_servers[0],
        "--replication-factor",
        "1",
        "--partitions",
        "1",
    )
    first = _cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == len(c.ALL_TOPICS)
    second = _cli(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("exists") == len(c.ALL_TOPICS) and "drift" not in second.stdout
