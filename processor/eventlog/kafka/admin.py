"""Creating the processor's Kafka topics on a cluster as `processor/eventlog/kafka/topics.py` specifies them,
idempotently.

Topics that exist are checked, never altered: any drift from the spec is reported, because adding partitions
reshuffles keys and changing configs is an operator's decision.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    for_code,
)

from processor.backoff import backoff_delay
from processor.eventlog.kafka.security import PLAINTEXT, KafkaSecurity
from processor.eventlog.kafka.topics import TopicSpec

#: how long the controller may take to create the topics before the request fails
CREATE_TIMEOUT_MS = 30_000
#: tries at reading a just-created topic's configs before its metadata reached the broker answering
UNKNOWN_TOPIC_ATTEMPTS = 8

@dataclass(frozen=True, slots=True)
class TopicOutcome:
    """What `ensure_topics` found or did for one topic."""

    name: str
    action: str  # "created" | "exists"
    drift: tuple[str, ...] = field(default=())
    #: False when the client may not read the topic's configs (no DESCRIBE_CONFIGS): only the shape was compared
    configs_checked: bool = True


def compare(
    spec: TopicSpec, name: str, partitions: int, replication_factor: int, config: Mapping[str, str]
) -> tuple[str, ...]:
    """Human-readable differences between an existing topic and its spec (empty when it matches)."""
    drift: list[str] = []
    if partitions < spec.partitions:
        drift.append(f"{name}: {partitions} partitions, spec wants {spec.partitions}")
    if replication_factor != spec.replication_factor:
        drift.append(f"{name}: replication factor {replication_factor}, spec wants {spec.replication_factor}")
    for key, wanted in sorted(spec.config.items()):
        actual = config.get(key)
        if actual != wanted:
            drift.append(f"{name}: {key}={actual}, spec wants {wanted}")
    return tuple(drift)


def _raise_for_errors(topic_errors: Sequence[Sequence[Any]]) -> set[str]:
    """Raise the first real error of a CreateTopics response; return the topics that already existed."""
    existed: set[str] = set()
    for entry in topic_errors:
        topic, code = entry[0], entry[1]
        if code == 0:
            continue
        error = for_code(code)
        if error is TopicAlreadyExistsError:  # another job won the race: that is what idempotent means
            existed.add(topic)
            continue
        message = entry[2] if len(entry) > 2 and entry[2] else error.__name__
        if error in (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
            message = (f"not allowed to create it ({message}): grant this client CREATE on the topic (a prefixed "
                       f"ACL on the topic prefix will do), or have the topics created beforehand")
        raise error(f"creating topic {topic}: {message}")
    return existed


async def _describe(admin: AIOKafkaAdminClient, specs: Mapping[str, TopicSpec]) -> dict[str, tuple[int, int]]:
    """Partition count and replication factor of each existing topic."""
    shapes: dict[str, tuple[int, int]] = {}
    for topic in await admin.describe_topics(list(specs)):
        partitions = topic["partitions"]
        replicas = len(partitions[0]["replicas"]) if partitions else 0
        shapes[topic["topic"]] = (len(partitions), replicas)
    return shapes


async def _configs(admin: AIOKafkaAdminClient, specs: Mapping[str, TopicSpec]) -> dict[str, dict[str, str] | None]:
    """The current values of the config keys our specs set, per topic; None where we may not read them.

    Reading topic configs needs DESCRIBE_CONFIGS, which a least-privilege client using topics the platform team
    made may lack: the processor must still start, so that check is reported as skipped, not failed.
    """
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, configs=dict.fromkeys(spec.config))
        for name, spec in specs.items()
    ]
    found: dict[str, dict[str, str] | None] = {}
    for attempt in range(1, UNKNOWN_TOPIC_ATTEMPTS + 1):
        try:
            for response in await admin.describe_configs(resources):
                for error_code, error_message, _type, name, entries, *_ in response.resources:
                    if for_code(error_code) is TopicAuthorizationFailedError:
                        found[name] = None
                        continue
                    if error_code:
                        raise for_code(error_code)(f"describing configs of {name}: {error_message}")
                    found[name] = {entry[0]: entry[1] for entry in entries}
            return found
        except UnknownTopicOrPartitionError:
            # a topic created a moment ago (by us or a job racing us) is listed by the controller before every
            # broker knows it: the broker answering may not have it yet
            if attempt == UNKNOWN_TOPIC_ATTEMPTS:
                raise
            await asyncio.sleep(backoff_delay(attempt, 0.1, 1.0))
    return found


async def ensure_topics(
    bootstrap_servers: Sequence[str],
    specs: Sequence[TopicSpec],
    prefix: str = "",
    *,
    request_timeout_ms: int = 15_000,
    fit_cluster: bool = False,
    security: KafkaSecurity = PLAINTEXT,
) -> list[TopicOutcome]:
    """Create the missing topics and report drift on existing ones; safe to run any number of times.

    With `fit_cluster`, no topic asks for more replicas than the cluster has brokers (`processor run` on a
    one-broker development cluster); `processor topics create` takes the replication factor as given.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=list(bootstrap_servers),
        client_id="processor-topics",
        request_timeout_ms=request_timeout_ms,
        **security.client_options(),
    )
    try:
        await admin.start()
        if fit_cluster:
            brokers = max(1, len((await admin.describe_cluster())["brokers"]))
            specs = [spec.with_replication_factor(min(spec.replication_factor, brokers)) for spec in specs]
        by_name = {spec.full_name(prefix): spec for spec in specs}
        existing = set(await admin.list_topics()) & set(by_name)
        missing = [name for name in by_name if name not in existing]
        if missing:
            raced = await _create(admin, [by_name[name] for name in missing], missing)
            existing |= raced
            missing = [name for name in missing if name not in raced]
        shapes = await _describe(admin, {n: by_name[n] for n in existing}) if existing else {}
        configs = await _configs(admin, {n: by_name[n] for n in existing}) if existing else {}
    finally:
        await admin.close()
    outcomes = [TopicOutcome(name, "created") for name in missing]
    outcomes += [_existing(name, by_name[name], shapes, configs) for name in sorted(existing)]
    order = list(by_name)
    return sorted(outcomes, key=lambda o: order.index(o.name))


async def _create(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec], names: Sequence[str]) -> set[str]:
    """Create the topics `names` (with `specs`, in the same order); return those another client created first."""
    new = [
        NewTopic(
            name=name,
            num_partitions=spec.partitions,
            replication_factor=spec.replication_factor,
            topic_configs=dict(spec.config),
        )
        for name, spec in zip(names, specs, strict=True)
    ]
    try:
        response = await admin.create_topics(new, timeout_ms=CREATE_TIMEOUT_MS)
        return _raise_for_errors(response.topic_errors)
    except TopicAlreadyExistsError:
        return set(names)


def _existing(
    name: str,
    spec: TopicSpec,
    shapes: Mapping[str, tuple[int, int]],
    configs: Mapping[str, dict[str, str] | None],
) -> TopicOutcome:
    """An existing topic, with how it differs from `spec`."""
    partitions, replicas = shapes.get(name, (0, 0))
    config = configs.get(name, {})
    if config is None:  # configs we may not read are unknown, not drift: compare the shape only
        spec = dataclasses.replace(spec, config={})
    drift = compare(spec, name, partitions, replicas, config or {})
    return TopicOutcome(name, "exists", drift, configs_checked=config is not None)
