"""What the ingress needs to know about a verified payload: id, type, kind, and the record key.

The JSON is parsed once, only to fill the record headers and choose the key; the record value stays the raw
bytes Stripe signed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

#: `object` of a v2 thin event notification: no state, the consumer fetches the related object
THIN = "v2.core.event"
#: `object` of a v1 snapshot event: carries `data.object`
SNAPSHOT = "event"
#: thin events about claimable sandboxes; their `related_object.id` is the sandbox id
SANDBOX_EVENT_PREFIX = "v2.core.claimable_sandbox."

NOT_JSON = "invalid_json"
NOT_EVENT = "not_an_event"


class EnvelopeError(ValueError):
    """A verified body that is not a Stripe event; `code` is the reason in the 400 answer."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class Envelope(NamedTuple):
    """The fields of an event that route it; `object` is "v2.core.event", "event" or whatever else came."""

    id: str
    type: str
    object: str
    key: str


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_envelope(body: bytes) -> Envelope:
    """Classify `body` and choose its key; raise EnvelopeError for non-JSON or JSON without id/type."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise EnvelopeError("body is not JSON", NOT_JSON) from None
    if not isinstance(data, dict):
        raise EnvelopeError("body is not a JSON object", NOT_EVENT)
    event_id, event_type, kind = data.get("id"), data.get("type"), data.get("object")
    if not (event_id and event_type and isinstance(event_id, str) and isinstance(event_type, str)):
        raise EnvelopeError("event without id or type", NOT_EVENT)
    if not isinstance(kind, str):
        kind = ""
    return Envelope(event_id, event_type, kind, _key(data, kind, event_type) or event_id)


def _key(data: dict[str, Any], kind: str, event_type: str) -> str | None:
    """Sandbox id for sandbox thin events, else the account the event belongs to (ARCHITECTURE §4)."""
    if kind == THIN:
        related = data.get("related_object")
        if event_type.startswith(SANDBOX_EVENT_PREFIX) and isinstance(related, dict):
            if sandbox_id := _string(related.get("id")):
                return sandbox_id
        # a thin event's `context` is the account it happened in
        return _string(data.get("context"))
    # snapshot events carry the connected account in `account`
    return _string(data.get("account"))
