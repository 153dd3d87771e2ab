"""Envelope parsing: payload kinds and the record key the ingress chooses (ARCHITECTURE §4)."""

from __future__ import annotations

import orjson
import pytest

from processor.ingress.envelope import NOT_EVENT, NOT_JSON, EnvelopeError, parse_envelope


def thin(event_type: str, related_id: str | None = "csb_1", context: str | None = "acct_9") -> bytes:
    event: dict[str, object] = {"id": "evt_thin", "object": "v2.core.event", "type": event_type}
    if related_id is not None:
        event["related_object"] = {"id": related_id, "type": "v2.core.claimable_sandbox", "url": "/v2/x"}
    if context is not None:
        event["context"] = context
    return orjson.dumps(event)


async def test_sandbox_thin_event_is_keyed_by_the_sandbox() -> None:
    """A v2.core.claimable_sandbox.* thin event is keyed by related_object.id, not its account."""
    envelope = parse_envelope(thin("v2.core.claimable_sandbox.claimed"))
    assert (envelope.id, envelope.type, envelope.object, envelope.key) == (
        "evt_thin",
        "v2.core.claimable_sandbox.claimed",
        "v2.core.event",
        "csb_1",
    )


async def test_other_thin_events_are_keyed_by_account_then_event_id() -> None:
    """Thin events about other objects use their context account, and the event id when there is none."""
    assert parse_envelope(thin("v2.core.account.updated", related_id="acct_x")).key == "acct_9"
    assert parse_envelope(thin("v2.core.claimable_sandbox.created", related_id=None)).key == "acct_9"
    assert parse_envelope(thin("v2.core.account.updated", context=None)).key == "evt_thin"


async def test_snapshot_events_are_keyed_by_account_then_event_id() -> None:
    """A v1 snapshot event is keyed by its connected account, else by its own id."""
    body = {"id": "evt_s", "object": "event", "type": "account.application.deauthorized", "data": {"object": {}}}
    assert parse_envelope(orjson.dumps({**body, "account": "acct_7"})).key == "acct_7"
    envelope = parse_envelope(orjson.dumps(body))
    assert (envelope.object, envelope.key) == ("event", "evt_s")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", NOT_JSON),
        (b"not json", NOT_JSON),
        (b"\xff\xfe{}", NOT_JSON),
        (b"[1, 2]", NOT_EVENT),
        (b'{"type": "x"}', NOT_EVENT),
        (b'{"id": "evt_1"}', NOT_EVENT),
        (b'{"id": 5, "type": "x"}', NOT_EVENT),
    ],
)
async def test_bodies_that_are_not_events_are_refused(body: bytes, code: str) -> None:
    """Non-JSON and JSON without a string id and type are refused with a reason code."""
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(body)
    assert caught.value.code == code
