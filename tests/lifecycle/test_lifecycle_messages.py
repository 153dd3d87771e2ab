"""The outgoing transition CloudEvent and state snapshot, built from decisions and checked against schemas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from processor.lifecycle import State, Step, decide
from processor.lifecycle.messages import (
    TRANSITION_TYPE,
    rfc3339,
    state_snapshot,
    transition_event,
    transition_id,
)
from tests.support.schemas import validate

SANDBOX = "clmsbx_test_61THl3VA5Zt5cTqbP16T9R4DRrSQbEWmWeLUx7WmOR8K"
AT = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_walked_path_becomes_valid_numbered_cloudevents() -> None:
    """A first observation of `installed` publishes four valid CloudEvents numbered 1..4, ids per state."""
    steps = decide(None, State.INSTALLED).steps
    events = [
        transition_event(
            SANDBOX,
            step,
            sequence=number,
            occurred_at=AT,
            event_id="evt_test_installed" if step.observed else None,
        )
        for number, step in enumerate(steps, start=1)
    ]
    for event in events:
        validate("sandbox-transition", orjson.loads(orjson.dumps(event)))
    assert [event["id"] for event in events] == [
        f"{SANDBOX}:unclaimed",
        f"{SANDBOX}:claimed",
        f"{SANDBOX}:pending_install",
        f"{SANDBOX}:installed",
    ]
    assert [event["data"]["sequence"] for event in events] == [1, 2, 3, 4]
    assert [event["data"]["event_id"] for event in events] == [None, None, None, "evt_test_installed"]
    first, last = events[0], events[-1]
    assert first["data"]["from_state"] is None
    assert last["data"] == {
        "sandbox_id": SANDBOX,
        "from_state": "pending_install",
        "to_state": "installed",
        "observed": True,
        "event_id": "evt_test_installed",
        "occurred_at": "2026-05-01T12:00:00.123Z",
        "sequence": 4,
    }
    assert (
        last["type"] == TRANSITION_TYPE
        and last["subject"] == SANDBOX
        and last["time"] == last["data"]["occurred_at"]
    )


def test_republished_transition_has_the_same_id() -> None:
    """Building the same transition again (a relay retry) gives the same CloudEvents id."""
    step = Step(State.CLAIMED, State.PENDING_ONBOARDING, observed=True)
    one = transition_event(SANDBOX, step, sequence=3, occurred_at=AT, event_id="evt_1")
    two = transition_event(SANDBOX, step, sequence=3, occurred_at=AT + timedelta(seconds=5), event_id="evt_1")
    assert one["id"] == two["id"] == transition_id(SANDBOX, State.PENDING_ONBOARDING)


def test_inferred_step_cannot_name_an_event() -> None:
    """An inferred step carrying an event id is refused: readers would look up the wrong event."""
    inferred = Step(State.UNCLAIMED, State.CLAIMED, observed=False)
    with pytest.raises(ValueError, match="inferred"):
        transition_event(SANDBOX, inferred, sequence=2, occurred_at=AT, event_id="evt_1")


def test_timestamps_are_utc_rfc3339() -> None:
    """Timestamps in other zones are written in UTC with a Z; naive ones are refused."""
    assert (
        rfc3339(datetime(2026, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))))
        == "2026-05-01T12:00:00.000Z"
    )
    with pytest.raises(ValueError, match="timezone"):
        rfc3339(datetime(2026, 5, 1, 12, 0))  # a naive datetime is the point


def test_snapshot_is_valid_with_and_without_stripe_fields() -> None:
    """Snapshots validate before the first fetch and after, with flags defaulting to false."""
    bare = state_snapshot(SANDBOX, State.UNCLAIMED, version=1, updated_at=AT)
    validate("sandbox-state", bare)
    assert bare["flags"] == {"app_deauthorized": False} and bare["stripe"] is None
    full = state_snapshot(
        SANDBOX,
        State.LIVE,
        version=7,
        updated_at=AT,
        flags={"app_deauthorized": True},
        stripe={
            "status": "live",
            "app_install_status": "installed",
            "sandbox_account": "acct_1",
            "owner_account": "acct_2",
            "livemode": False,
            "created": "2026-04-01T00:00:00.000Z",
            "claimed_at": "2026-04-02T00:00:00.000Z",
            "expires_at": "2026-05-31T00:00:00.000Z",
        },
        last_event_id="evt_test_9",
    )
    validate("sandbox-state", orjson.loads(orjson.dumps(full)))
    assert full["state"] == "live" and full["version"] == 7 and full["flags"]["app_deauthorized"] is True
