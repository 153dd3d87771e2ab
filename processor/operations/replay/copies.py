"""The records a replay run publishes: a copy of a record of the DLQ or the input topic, or an event fetched from
Stripe's Events APIs as the ingress would have published it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from processor import constants as c
from processor.eventlog.base import Headers, Record
from processor.ingress.envelope import parse_envelope
from processor.lifecycle.messages import rfc3339
from processor.operations import dlq as dlq_ops

#: headers a copy does not inherit: the DLQ's error headers and an earlier replay's own
#: (values: replay.run-id = the run id; replay.of = `dlq:P:O`, `events:P:O` or `stripe:<event id>`)
_NOT_COPIED = c.DLQ_ERROR_HEADERS | {c.H_REPLAY_RUN, c.H_REPLAY_OF}
#: the fields of a v2 event that make its thin notification (what a webhook delivers)
_NOTIFICATION_FIELDS = ("id", "object", "type", "created", "livemode", "context", "reason", "related_object")


@dataclass(slots=True)
class Candidate:
    """A record a run may publish; `identity` (its `replay.of`) names what it copies."""

    identity: str
    event_id: str | None
    event_type: str | None
    key: bytes | None
    value: bytes
    headers: Headers
    entry: dlq_ops.DlqEntry | None = None
    #: the partition it is read from (None: not from the log); the scope of a run's memory of what it sent
    partition: int | None = None


def copy_record(record: Record, identity: str, run_id: str) -> Candidate:
    """A copy of `record` for run `run_id`: its key, value and headers, marked as the run's copy of `identity`."""
    headers = [(k, v) for k, v in record.headers if k not in _NOT_COPIED]
    headers += [(c.H_REPLAY_RUN, run_id.encode()), (c.H_REPLAY_OF, identity.encode())]
    event_id = event_type = None
    try:
        body = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        event_id = body.get("id") if isinstance(body.get("id"), str) else None
        event_type = body.get("type") if isinstance(body.get("type"), str) else None
    return Candidate(
        identity,
        event_id or record.header(c.H_EVENT_ID),
        event_type or record.header(c.H_EVENT_TYPE),
        record.key,
        record.value,
        tuple(headers),
        partition=record.partition,
    )


def notification(event: dict[str, Any]) -> bytes:
    """The thin event notification a webhook would have carried for a v2 event fetched from the API."""
    return orjson.dumps({name: event[name] for name in _NOTIFICATION_FIELDS if name in event})


def stripe_candidate(event: dict[str, Any], run_id: str) -> Candidate:
    """An event from an Events API as the ingress would have published it (same key rule and headers): a v2
    event as its thin notification, a v1 event as the snapshot a webhook carries (the listed object itself)."""
    body = notification(event) if event.get("object") == "v2.core.event" else orjson.dumps(event)
    envelope = parse_envelope(body)
    identity = f"stripe:{envelope.id}"
    headers = (
        (c.H_EVENT_ID, envelope.id.encode()),
        (c.H_EVENT_TYPE, envelope.type.encode()),
        (c.H_OBJECT, envelope.object.encode()),
        (c.H_RECEIVED_AT, rfc3339(datetime.now(UTC)).encode()),
        # fetched over the authenticated API, verified by no webhook secret: no stripe.secret-index header;
        # `replay.of` says where the record came from (schemas/asyncapi.yaml)
        (c.H_REPLAY_RUN, run_id.encode()),
        (c.H_REPLAY_OF, identity.encode()),
    )
    return Candidate(identity, envelope.id, envelope.type, envelope.key.encode(), body, headers)
