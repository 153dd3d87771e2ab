"""`processor topics create|show`: create the processor's Kafka topics, or print their settings.

For clusters without Strimzi (the Helm chart renders `KafkaTopic` resources from the same specs). `create` is
idempotent: topics that exist are checked, never altered, and any drift from the spec is reported, because
adding partitions reshuffles keys and changing configs is an operator's decision.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from processor.settings import Settings
from processor.topics import TopicSpec, spec_document, topic_specs

#: how long the controller may take to create the topics before the request fails
CREATE_TIMEOUT_MS = 30_000
#: exit code when a topic exists with settings that differ from the spec
EXIT_DRIFT = 1
#: exit code for "nothing to talk to" (matches the CLI's configuration-error code)
EXIT_NOT_CONFIGURED = 2


@dataclass(frozen=True, slots=True)
class TopicOutcome:
    """What `ensure_topics` found or did for one topic."""

    name: str
    action: str  # "created" | "exists"
    drift: tuple[str, ...] = field(default=())


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


async def _configs(admin: AIOKafkaAdminClient, specs: Mapping[str, TopicSpec]) -> dict[str, dict[str, str]]:
    """The current values of the config keys our specs set, per topic."""
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, configs=dict.fromkeys(spec.config))
        for name, spec in specs.items()
    ]
    found: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for error_code, error_message, _type, name, entries, *_ in response.resources:
            if error_code:
                raise for_code(error_code)(f"describing configs of {name}: {error_message}")
            found[name] = {entry[0]: entry[1] for entry in entries}
    return found


async def ensure_topics(
    bootstrap_servers: Sequence[str],
    specs: Sequence[TopicSpec],
    prefix: str = "",
    *,
    request_timeout_ms: int = 15_000,
) -> list[TopicOutcome]:
    """Create the missing topics and report drift on existing ones; safe to run any number of times."""
    by_name = {spec.full_name(prefix): spec for spec in specs}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=list(bootstrap_servers),
        client_id="processor-topics",
        request_timeout_ms=request_timeout_ms,
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics()) & set(by_name)
        missing = [name for name in by_name if name not in existing]
        if missing:
            new = [
                NewTopic(
                    name=name,
                    num_partitions=by_name[name].partitions,
                    replication_factor=by_name[name].replication_factor,
                    topic_configs=dict(by_name[name].config),
                )
                for name in missing
            ]
            try:
                response = await admin.create_topics(new, timeout_ms=CREATE_TIMEOUT_MS)
                raced = _raise_for_errors(response.topic_errors)
            except TopicAlreadyExistsError:
                raced = set(missing)
            existing |= raced
            missing = [name for name in missing if name not in raced]
        shapes = await _describe(admin, {n: by_name[n] for n in existing}) if existing else {}
        configs = await _configs(admin, {n: by_name[n] for n in existing}) if existing else {}
    finally:
        await admin.close()
    outcomes = [TopicOutcome(name, "created") for name in missing]
    for name in sorted(existing):
        partitions, replicas = shapes.get(name, (0, 0))
        outcomes.append(
            TopicOutcome(name, "exists", compare(by_name[name], name, partitions, replicas, configs.get(name, {})))
        )
    order = list(by_name)
    return sorted(outcomes, key=lambda o: order.index(o.name))


def _selected_specs(args: argparse.Namespace) -> tuple[TopicSpec, ...]:
    return topic_specs(partitions=args.partitions, replication_factor=args.replication_factor)


def _create(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    bootstrap = settings.kafka_bootstrap_servers
    if args.bootstrap:  # the same validation as the environment variable, so errors read the same
        bootstrap = Settings.from_env({"PROCESSOR_KAFKA_BOOTSTRAP_SERVERS": args.bootstrap}).kafka_bootstrap_servers
    if not bootstrap:
        print(
            "processor topics create: no Kafka configured; set PROCESSOR_KAFKA_BOOTSTRAP_SERVERS or pass "
            "--bootstrap host:port (the embedded PostgreSQL log needs no topics)",
            file=sys.stderr,
        )
        return EXIT_NOT_CONFIGURED
    try:
        outcomes = asyncio.run(ensure_topics(bootstrap, _selected_specs(args), settings.topic_prefix))
    except KafkaError as exc:
        print(f"processor topics create: Kafka at {','.join(bootstrap)} failed: {exc!r}", file=sys.stderr)
        return 1
    drifted = False
    for outcome in outcomes:
        print(f"{outcome.action:8} {outcome.name}")
        for line in outcome.drift:
            drifted = True
            print(f"  drift: {line}")
    return EXIT_DRIFT if drifted else 0


def write_spec(out: TextIO, fmt: str, specs: tuple[TopicSpec, ...], prefix: str) -> None:
    """Print the topic specs as JSON or YAML for other tools (the Helm chart's files/topics.yaml)."""
    document = spec_document(specs, prefix)
    if fmt == "json":
        out.write(json.dumps(document, indent=2) + "\n")
    else:
        out.write("# generated by `processor topics show --format yaml` from processor/topics.py: do not edit\n")
        out.write(yaml.safe_dump(document, sort_keys=False, width=120))


def _show(args: argparse.Namespace) -> int:
    prefix = args.prefix if args.prefix is not None else Settings.from_env().topic_prefix
    write_spec(sys.stdout, args.format, _selected_specs(args), prefix)
    return 0


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(subparsers: Any) -> None:
    """Add `processor topics create|show`."""
    parser = subparsers.add_parser("topics", help="create the Kafka topics or print their settings")
    commands = parser.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    sizing = argparse.ArgumentParser(add_help=False)
    sizing.add_argument(
        "--partitions",
        type=_positive,
        default=None,
        help="partitions per topic instead of the spec's (e.g. 1 on a laptop)",
    )
    sizing.add_argument(
        "--replication-factor",
        type=_positive,
        default=None,
        help="replicas instead of 3, for clusters with fewer brokers; min.insync.replicas is lowered to match",
    )

    create = commands.add_parser(
        "create", parents=[sizing], help="create missing topics (idempotent); report drift on existing ones"
    )
    create.add_argument(
        "--bootstrap", default=None, help="host:port[,host:port]; default PROCESSOR_KAFKA_BOOTSTRAP_SERVERS"
    )
    create.set_defaults(handler=_create)

    show = commands.add_parser("show", parents=[sizing], help="print the topic specs as JSON or YAML")
    show.add_argument("--format", choices=("json", "yaml"), default="json")
    show.add_argument("--prefix", default=None, help="topic name prefix; default PROCESSOR_TOPIC_PREFIX")
    show.set_defaults(handler=_show)
