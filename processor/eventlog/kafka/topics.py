"""The Kafka topics the processor owns, with every setting they must have: the one source of truth.

`processor topics create`, the Helm chart's Strimzi `KafkaTopic` resources (rendered from the file that
`processor topics show --format yaml` writes) and the compose topic job all take their settings from here;
tests/deploy checks that they agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processor import constants as c

_DAY_MS = 24 * 60 * 60 * 1000

#: a production cluster has at least three brokers: one can be down for maintenance and one can fail
REPLICATION_FACTOR = 3
#: with acks=all a write is durable on two brokers before the ingress answers 200, and one broker may be down
MIN_INSYNC_REPLICAS = 2
#: the ingress accepts bodies up to 1 MiB (DEFAULT_MAX_BODY_BYTES); key, headers and batch framing come on
#: top, and Kafka's default of 1 MiB + 12 bytes would reject the largest deliveries the ingress accepts
MAX_MESSAGE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: unprefixed name, partition count, replication factor and topic-level configuration."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]
    description: str

    def full_name(self, prefix: str = "") -> str:
        """The topic's name on the cluster, with the configured prefix."""
        return f"{prefix}{self.name}"

    def with_replication_factor(self, replication_factor: int) -> TopicSpec:
        """The same topic for a smaller cluster; min.insync.replicas never exceeds the replica count."""
        config = dict(self.config)
        if "min.insync.replicas" in config:
            config["min.insync.replicas"] = str(min(int(config["min.insync.replicas"]), replication_factor))
        return TopicSpec(self.name, self.partitions, replication_factor, config, self.description)

    def with_partitions(self, partitions: int) -> TopicSpec:
        """The same topic with another partition count (consumers scale out to one per partition)."""
        return TopicSpec(self.name, partitions, self.replication_factor, dict(self.config), self.description)

    def as_dict(self, prefix: str = "") -> dict[str, Any]:
        """A plain mapping for JSON/YAML output that deployment tooling reads."""
        return {
            "name": self.full_name(prefix),
            "partitions": self.partitions,
            "replicationFactor": self.replication_factor,
            "config": dict(sorted(self.config.items())),
            "description": self.description,
        }


def _config(*, retention_ms: int | None, compact: bool = False, max_message_bytes: int | None = None) -> dict[str, str]:
    config = {
        "cleanup.policy": "compact" if compact else "delete",
        "min.insync.replicas": str(MIN_INSYNC_REPLICAS),
    }
    if retention_ms is not None:
        config["retention.ms"] = str(retention_ms)
    if max_message_bytes is not None:
        config["max.message.bytes"] = str(max_message_bytes)
    return config


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        name=c.TOPIC_EVENTS,
        # 12 divides evenly among 1, 2, 3, 4, 6 or 12 lifecycle consumers; the key (sandbox id) keeps order
        partitions=12,
        replication_factor=REPLICATION_FACTOR,
        # two weeks: operators replay from here after fixing a bug; older events are still in Stripe's API
        config=_config(retention_ms=14 * _DAY_MS, max_message_bytes=MAX_MESSAGE_BYTES),
        description="Verified Stripe webhook payloads, unchanged; key = sandbox, else account, else event id",
    ),
    TopicSpec(
        name=c.TOPIC_DLQ,
        # low volume and read by humans and the replay tool: a few partitions suffice
        partitions=3,
        replication_factor=REPLICATION_FACTOR,
        # a month, so a dead letter survives a holiday before someone looks at it
        config=_config(retention_ms=30 * _DAY_MS, max_message_bytes=MAX_MESSAGE_BYTES),
        description="Events the consumer could not process, with error.* headers and the original position",
    ),
    TopicSpec(
        name=c.TOPIC_TRANSITIONS,
        partitions=12,
        replication_factor=REPLICATION_FACTOR,
        # downstream services that were down for up to a month still catch up from the stream
        config=_config(retention_ms=30 * _DAY_MS),
        description="One CloudEvent per lifecycle state entered; key = sandbox id",
    ),
    TopicSpec(
        name=c.TOPIC_STATE,
        partitions=12,
        replication_factor=REPLICATION_FACTOR,
        # compacted and kept forever: a new service bootstraps the latest snapshot of every sandbox from it;
        # daily segments let the cleaner compact even a quiet topic
        config={**_config(retention_ms=None, compact=True), "segment.ms": str(_DAY_MS)},
        description="Latest snapshot of every sandbox (compacted); key = sandbox id",
    ),
)


def topic_specs(*, partitions: int | None = None, replication_factor: int | None = None) -> tuple[TopicSpec, ...]:
    """The topic specs, optionally sized for a smaller cluster (a laptop, the compose stack, a test)."""
    specs = TOPICS
    if partitions is not None:
        specs = tuple(spec.with_partitions(partitions) for spec in specs)
    if replication_factor is not None:
        specs = tuple(spec.with_replication_factor(replication_factor) for spec in specs)
    return specs


def spec_document(specs: tuple[TopicSpec, ...] = TOPICS, prefix: str = "") -> dict[str, Any]:
    """The machine-readable form `processor topics show` prints and the Helm chart reads."""
    return {"topics": [spec.as_dict(prefix) for spec in specs]}
