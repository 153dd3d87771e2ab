"""The parser reads any record into an event or a MalformedEvent (poison), never another error."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.consumer.inbound import Inbound, MalformedEvent, parse
from processor.eventlog.base import Record


def record(body: Any, raw: bytes | None = None) -> Record:
    return Record("t.stripe.events", 0, 0, None, raw if raw is not None else json.dumps(body).encode(), (), 0)


def thin(created: Any) -> dict[str, Any]:
    return {
        "id": "evt_thin",
        "object": "v2.core.event",
        "type": "v2.core.claimable_sandbox.updated",
        "created": created,
        "related_object": {"id": "clmsbx_1", "type": "v2.core.claimable_sandbox"},
    }


def snapshot(created: Any) -> dict[str, Any]:
    return {"id": "evt_v1", "object": "event", "type": "account.application.deauthorized",
            "account": "acct_1", "created": created}


def parses_or_is_poison(rec: Record) -> Inbound | None:
    """Parse; a returned event has a UTC `created` whose millisecond form converts back (as the applier does)."""
    try:
        event = parse(rec)
    except MalformedEvent:
        return None
    assert event.created.tzinfo is UTC
    datetime.fromtimestamp(event.created_ms / 1000, UTC)
    return event


@pytest.mark.parametrize(
    "body",
    [
        thin("0001-01-01T00:00:00+14:00"),  # year 0 once in UTC
        thin("9999-12-31T23:59:59-14:00"),  # year 10000 once in UTC
        snapshot(10**18),  # beyond the platform's time_t
        snapshot(253402300800),  # year 10000
    ],
    ids=["thin-year-1-plus-14h", "thin-year-9999-minus-14h", "v1-10e18", "v1-year-10000"],
)
def test_created_out_of_range_is_malformed(body: dict[str, Any]) -> None:
    """A `created` that has no datetime is poison (MalformedEvent), not an error retried forever."""
    with pytest.raises(MalformedEvent, match="created"):
        parse(record(body))


@pytest.mark.parametrize("body", [thin(10**20), snapshot(10**20), thin(str(10**20)), snapshot(-(10**20))])
def test_created_of_10e20_is_malformed(body: dict[str, Any]) -> None:
    """10**20 (beyond 64 bits, JSON still valid) is poison too, in either kind of event."""
    with pytest.raises(MalformedEvent):
        parse(record(body))


def test_created_at_the_edges_of_the_range_parses() -> None:
    """The first and last instants a datetime can hold are read, in UTC."""
    first = parse(record(thin("0001-01-01T00:00:00Z")))
    last = parse(record(thin("9999-12-31T23:59:59.999+00:00")))
    assert first.created == datetime(1, 1, 1, tzinfo=UTC)
    assert last.created.year == 9999


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
iso_dates = st.builds(
    lambda moment, offset_min: moment.isoformat() + f"{'+' if offset_min >= 0 else '-'}"
    f"{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}",
    st.datetimes(), st.integers(-24 * 60 + 1, 24 * 60 - 1),
)
created_values = json_values | iso_dates | st.integers(min_value=-(2**63), max_value=2**64 - 1)


@given(created_values)
def test_any_created_parses_or_is_poison(created: Any) -> None:
    """Whatever `created` holds, a thin or v1 event parses or is MalformedEvent."""
    parses_or_is_poison(record(thin(created)))
    parses_or_is_poison(record(snapshot(created)))


@given(st.dictionaries(st.sampled_from(["id", "object", "type", "created", "related_object", "account",
                                        "context"]), json_values))
def test_any_json_object_parses_or_is_poison(body: dict[str, Any]) -> None:
    """Any JSON object, with any of the fields the parser reads, parses or is MalformedEvent."""
    parses_or_is_poison(record(body))


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_poison(raw: bytes) -> None:
    """Any record value at all parses or is MalformedEvent."""
    parses_or_is_poison(record(None, raw))
