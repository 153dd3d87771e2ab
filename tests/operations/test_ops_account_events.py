"""Every account event shows in the history of the sandbox it ended up affecting, or in the unmatched view, so an
operator can explain every app_deauthorized flag (applied through the consumer's Applier on a real database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from processor import constants as c
from processor.consumer.applier import Applier, Observation
from processor.consumer.inbound import AUTHORIZED, DEAUTHORIZED, Action, Inbound, parse
from processor.db.pool import Database
from processor.eventlog.base import Record
from processor.lifecycle import observed_state
from processor.operations.event_lookup import list_processed, unmatched_account_events
from processor.operations.inspect import show_sandbox
from processor.settings import Settings

SANDBOX = "clmsbx_test_account_events"
OWNER = "acct_test_owner"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _applier(settings: Settings, db: Database) -> Applier:
    return Applier(db.pool, settings.topic(c.TOPIC_TRANSITIONS), settings.topic(c.TOPIC_STATE))


def _account_event(event_id: str, event_type: str, created: datetime) -> Inbound:
    body = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "account": OWNER,
        "created": int(created.timestamp()),
        "data": {"object": {"id": "ca_test", "object": "application"}},
    }
    return parse(Record("t", 0, 0, OWNER.encode(), orjson.dumps(body), (), 0))


def _installed(event_id: str) -> Observation:
    fetched: dict[str, Any] = {
        "id": SANDBOX,
        "status": "live",
        "owner_details": {"app_install_status": "installed", "account": OWNER},
        "sandbox_details": {"account": "acct_test_sandbox"},
    }
    record = Record("t", 0, 0, SANDBOX.encode(), b"{}", (), 0)
    event = Inbound(record, event_id, "v2.core.claimable_sandbox.updated", Action.OBSERVE, SANDBOX, None, T0)
    return Observation(SANDBOX, [event], fetched, observed_state(fetched))


async def _history(db: Database) -> dict[str, list[tuple[str, str]]]:
    shown = await show_sandbox(db, SANDBOX, last=100)
    assert shown is not None
    by_event: dict[str, list[tuple[str, str]]] = {}
    for row in shown["history"]:
        if row["event_id"]:
            by_event.setdefault(row["event_id"], []).append((row["kind"], row["reason"] or ""))
    return by_event


async def test_an_older_authorization_after_the_deauthorization_is_named_in_history(
    pg_settings: Settings, database: Database
) -> None:
    """The deauthorization sets the flag; the authorization it ended, delivered late, changes nothing but has
    a history row saying it was ignored as older."""
    applier = _applier(pg_settings, database)
    await applier.apply([_installed("evt_test_install")], [], [])
    await applier.apply([], [], [_account_event("evt_test_deauth", DEAUTHORIZED, T0 + timedelta(minutes=5))])
    await applier.apply([], [], [_account_event("evt_test_auth", AUTHORIZED, T0)])
    shown = await show_sandbox(database, SANDBOX)
    assert shown is not None and shown["sandbox"]["flags"] == {"app_deauthorized": True}
    history = await _history(database)
    assert history["evt_test_deauth"] == [("flag", f"app_deauthorized=true (account {OWNER})")]
    [(kind, reason)] = history["evt_test_auth"]
    assert kind == "flag" and reason.startswith("ignored: older than the account event")


async def test_an_account_event_before_its_sandbox_is_matched_later_and_leaves_the_unmatched_view(
    pg_settings: Settings, database: Database
) -> None:
    """Account events processed before any sandbox has their account are listed as unmatched; once the install
    reveals the account, they are applied in `created` order, named in the sandbox's history, and the
    processed-event lookup points at the sandbox."""
    applier = _applier(pg_settings, database)
    early = [
        _account_event("evt_test_auth", AUTHORIZED, T0),
        _account_event("evt_test_deauth", DEAUTHORIZED, T0 + timedelta(minutes=5)),
    ]
    await applier.apply([], [], early)
    unmatched = await unmatched_account_events(database)
    assert [e["event_id"] for e in unmatched.data] == ["evt_test_deauth", "evt_test_auth"]
    await applier.apply([_installed("evt_test_install")], [], [])
    assert (await unmatched_account_events(database)).data == []
    shown = await show_sandbox(database, SANDBOX)
    assert shown is not None and shown["sandbox"]["flags"] == {"app_deauthorized": True}
    history = await _history(database)
    assert [kind for kind, _ in history["evt_test_auth"] + history["evt_test_deauth"]] == ["flag", "flag"]
    assert "kept until the sandbox's account became known" in history["evt_test_deauth"][0][1]
    listed = await list_processed(database, sandbox_id=SANDBOX)
    assert {(e["event_id"], e["outcome"]) for e in listed.data} >= {
        ("evt_test_auth", "flag"),
        ("evt_test_deauth", "flag"),
    }
