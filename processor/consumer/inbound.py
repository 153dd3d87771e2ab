"""What a record of stripe.events asks the lifecycle consumer to do, parsed once from its raw bytes.

A v2 thin event about a claimable sandbox is an *observation* (fetch the sandbox, drive it to the fetched
state), `.expiring` a *notice*, v1 `account.application.*` an *account* event (a flag on the matching
sandboxes); everything else is *ignored* but still advances the offset. A record that cannot be understood
raises `MalformedEvent`, a PoisonEvent: it goes to the DLQ.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from processor import constants as c
from processor.errors import PoisonEvent
from processor.eventlog.base import Record

THIN = "v2.core.event"
SNAPSHOT = "event"
SANDBOX_PREFIX = "v2.core.claimable_sandbox."
#: thin event types after which the sandbox may be in a new state: fetch it and drive the machine there
OBSERVATION_TYPES = frozenset(f"{SANDBOX_PREFIX}{action}" for action in ("created", "claimed", "updated", "expired"))
EXPIRING = f"{SANDBOX_PREFIX}expiring"
DEAUTHORIZED = "account.application.deauthorized"
AUTHORIZED = "account.application.authorized"
ACCOUNT_TYPES = frozenset({DEAUTHORIZED, AUTHORIZED})


class MalformedEvent(PoisonEvent):
    """A verified record whose body is not a Stripe event the consumer can read."""

    code = "malformed_event"


class Action(StrEnum):
    OBSERVE = "observe"
    NOTICE = "notice"
    ACCOUNT = "account"
    IGNORE = "ignore"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One parsed record of stripe.events."""

    record: Record
    event_id: str
    type: str
    action: Action
    #: the claimable sandbox (observations and notices)
    sandbox_id: str | None
    #: the account of a v1 event, or the `context` of a thin event (sent back as Stripe-Context)
    account: str | None
    created: datetime
    #: False for observations we made without a Stripe event (reconcile, API registration before Stripe lists
    #: the event): their ids are ours, so published transitions say `event_id: null` as the schema means
    from_stripe: bool = True

    @property
    def created_ms(self) -> int:
        return int(self.created.timestamp() * 1000)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


#: errors a value out of range raises while it is read (a date past year 9999, a timestamp beyond time_t, a
#: header that is not UTF-8): the record can never be read, so it is poison like any other malformed event
_UNREADABLE = (ValueError, OverflowError, OSError, TypeError)


def parse(record: Record) -> Inbound:
    """Read one record; `MalformedEvent` if it is not a Stripe event we can act on."""
    try:
        return _parse(record)
    except MalformedEvent:
        raise
    except _UNREADABLE as exc:
        # retrying cannot help and an unexpected error would block the partition for good
        raise MalformedEvent(f"the record cannot be read: {type(exc).__name__}: {exc}") from exc


def _parse(record: Record) -> Inbound:
    try:
        body = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        raise MalformedEvent("the record value is not JSON") from None
    if not isinstance(body, dict):
        raise MalformedEvent("the record value is not a JSON object")
    event_id = _text(body.get("id")) or record.header(c.H_EVENT_ID)
    event_type = _text(body.get("type"))
    if event_id is None or event_type is None:
        raise MalformedEvent("the event has no id or no type")
    kind = body.get("object")
    if kind == THIN:
        return _thin(record, body, event_id, event_type)
    if kind == SNAPSHOT:
        return _snapshot(record, body, event_id, event_type)
    raise MalformedEvent(f"event {event_id} has object {kind!r}, expected {THIN!r} or {SNAPSHOT!r}")


def _thin(record: Record, body: dict[str, Any], event_id: str, event_type: str) -> Inbound:
    try:
        created = datetime.fromisoformat(str(body.get("created")))
    except ValueError:
        raise MalformedEvent(f"event {event_id} has no RFC 3339 `created`") from None
    if created.tzinfo is None:
        raise MalformedEvent(f"event {event_id} has a `created` without a time zone")
    try:
        # a date near year 1 or 9999 with an offset is in range only before it is converted to UTC
        created = created.astimezone(UTC)
    except OverflowError:
        raise MalformedEvent(f"event {event_id} has a `created` out of range") from None
    context = _text(body.get("context"))
    if event_type in OBSERVATION_TYPES or event_type == EXPIRING:
        related = body.get("related_object")
        sandbox_id = _text(related.get("id")) if isinstance(related, dict) else None
        if sandbox_id is None:
            raise MalformedEvent(f"event {event_id} ({event_type}) names no claimable sandbox")
        action = Action.OBSERVE if event_type in OBSERVATION_TYPES else Action.NOTICE
        return Inbound(record, event_id, event_type, action, sandbox_id, context, created)
    return Inbound(record, event_id, event_type, Action.IGNORE, None, context, created)


def _snapshot(record: Record, body: dict[str, Any], event_id: str, event_type: str) -> Inbound:
    created_raw = body.get("created")
    if not isinstance(created_raw, int) or isinstance(created_raw, bool) or created_raw < 0:
        raise MalformedEvent(f"event {event_id} has no unix `created`")
    try:
        created = datetime.fromtimestamp(created_raw, UTC)
    except (ValueError, OverflowError, OSError):  # beyond year 9999 or the platform's time_t
        raise MalformedEvent(f"event {event_id} has a unix `created` out of range") from None
    account = _text(body.get("account"))
    if event_type in ACCOUNT_TYPES:
        if account is None:
            raise MalformedEvent(f"event {event_id} ({event_type}) names no account")
        return Inbound(record, event_id, event_type, Action.ACCOUNT, None, account, created)
    return Inbound(record, event_id, event_type, Action.IGNORE, None, account, created)
