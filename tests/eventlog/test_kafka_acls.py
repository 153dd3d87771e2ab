"""The least-privilege ACL table names the resources the code really uses."""

from __future__ import annotations

from processor import constants as c
from processor.eventlog.kafka.acls import RELAY_TRANSACTIONAL_ID, ROLES, merged, permissions
from processor.outbox.relay import RELAY_ROLE


def test_relay_transactional_id_is_the_relays_role() -> None:
    """The transactional id granted to the relay is the one processor/outbox/relay.py claims."""
    assert RELAY_TRANSACTIONAL_ID == RELAY_ROLE
    granted = {(p.resource_type, p.name) for p in permissions("relay", "prod.")}
    assert ("transactionalId", f"prod.{RELAY_ROLE}") in granted


def test_no_role_may_touch_anything_but_our_topics_group_and_transactional_id() -> None:
    """Every grant names one of our prefixed topics, our group or the relay's id; nothing cluster-wide."""
    ours = {f"prod.{t}" for t in c.ALL_TOPICS} | {f"prod.{c.GROUP_LIFECYCLE}", f"prod.{RELAY_ROLE}"}
    assert {p.name for p in merged(ROLES, "prod.")} == ours
