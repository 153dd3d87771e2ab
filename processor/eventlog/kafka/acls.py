"""What each process of the processor may do on Kafka: least-privilege ACLs, one source for every place that
grants them (the Strimzi KafkaUser examples in deploy/, deploy/README.md's table, the secured dev broker).

Names and operations are spelled as Strimzi's `KafkaUser` spells them. Every grant is LITERAL on one of our
topics, our group or the relay's transactional id, so a user can create only our topics and touch nothing else
on a shared cluster.
Describe is granted wherever a client reads metadata (partition counts, leaders, end offsets).
"""

from __future__ import annotations

from dataclasses import dataclass

from processor import constants as c


@dataclass(frozen=True, slots=True)
class Permission:
    """Operations allowed on one resource."""

    resource_type: str  # topic | group | transactionalId
    name: str
    operations: tuple[str, ...]  # Read | Write | Describe | Create | DescribeConfigs

    def strimzi(self) -> dict[str, object]:
        """This permission as an entry of a Strimzi KafkaUser's `spec.authorization.acls`."""
        return {
            "resource": {"type": self.resource_type, "name": self.name, "patternType": "literal"},
            "operations": list(self.operations),
            "host": "*",
        }


#: the relay's transactional id after the topic prefix: processor.outbox.relay.RELAY_ROLE (not imported, to keep
#: the CLI's start light; tests/eventlog/test_kafka_acls.py checks they agree)
RELAY_TRANSACTIONAL_ID = "outbox-relay"

#: process roles, as deploy/README.md lists them
ROLES = ("ingress", "lifecycle", "relay", "operator", "topics")


def permissions(role: str, prefix: str = "") -> tuple[Permission, ...]:
    """The ACLs one role needs with topic prefix `prefix`; `processor run` needs the union of all roles."""
    events, dlq = f"{prefix}{c.TOPIC_EVENTS}", f"{prefix}{c.TOPIC_DLQ}"
    transitions, state = f"{prefix}{c.TOPIC_TRANSITIONS}", f"{prefix}{c.TOPIC_STATE}"
    relay = (
        Permission("topic", transitions, ("Write", "Describe")),
        Permission("topic", state, ("Write", "Describe")),
        # the relay writes through a transactional producer fenced by this id (processor/outbox/relay.py)
        Permission("transactionalId", f"{prefix}{RELAY_TRANSACTIONAL_ID}", ("Write", "Describe")),
    )
    if role == "ingress":  # publishes deliveries (an idempotent producer needs Write on a topic, nothing more)
        return (Permission("topic", events, ("Write", "Describe")),)
    if role == "lifecycle":  # `processor consume`: the group's consumer, the DLQ, and the relay it runs by default
        return (
            Permission("topic", events, ("Read", "Describe")),
            Permission("group", f"{prefix}{c.GROUP_LIFECYCLE}", ("Read",)),
            Permission("topic", dlq, ("Write", "Describe")),
            *relay,
        )
    if role == "relay":  # `processor relay` on its own
        return relay
    if role == "operator":  # replay, dlq, status: read the input and the DLQ, re-publish into the input, and
        # the lifecycle group's committed offsets for the lag `processor status` reports
        return (
            Permission("topic", events, ("Read", "Write", "Describe")),
            Permission("topic", dlq, ("Read", "Write", "Describe")),
            Permission("group", f"{prefix}{c.GROUP_LIFECYCLE}", ("Describe",)),
        )
    if role == "topics":  # `processor topics create`: our four topics only; DescribeConfigs to report drift
        return tuple(Permission("topic", f"{prefix}{name}", ("Create", "Describe", "DescribeConfigs"))
                     for name in c.ALL_TOPICS)
    raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")


def merged(roles: tuple[str, ...], prefix: str = "") -> tuple[Permission, ...]:
    """Several roles' permissions, one entry per resource (what a single `processor run` user needs)."""
    by_resource: dict[tuple[str, str], list[str]] = {}
    for role in roles:
        for permission in permissions(role, prefix):
            ops = by_resource.setdefault((permission.resource_type, permission.name), [])
            ops.extend(op for op in permission.operations if op not in ops)
    return tuple(Permission(kind, name, tuple(ops)) for (kind, name), ops in by_resource.items())
