"""Registers a sandbox the API just created, through the consumer's own transaction (`Applier.apply`).

The create is observed exactly as the lifecycle consumer would observe it: we look up Stripe's
`v2.core.claimable_sandbox.created` event for the sandbox and apply an Observation of it. So the `unclaimed`
transition is published through the outbox once, and when that event's webhook arrives the consumer finds it
in `processed_events` and skips it. If the event cannot be found (Stripe lists it a moment later), a
stand-in event id is used; the webhook is then applied as a stale observation, which changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from processor.consumer.applier import Applier, Observation
from processor.consumer.inbound import Action, Inbound
from processor.errors import StripeError
from processor.eventlog.base import Record
from processor.lifecycle import observed_state
from processor.stripe_api.budget import Priority
from processor.stripe_api.client import StripeApi

log = logging.getLogger("processor.api")

CREATED = "v2.core.claimable_sandbox.created"
#: where the stand-in record claims to come from (it never was in the event log)
SOURCE_TOPIC = "sandbox-api"


def without_keys(sandbox: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a create response with the one-time API keys removed, so nothing downstream can keep them."""
    copy = dict(sandbox)
    details = copy.get("sandbox_details")
    if isinstance(details, Mapping):
        copy["sandbox_details"] = {k: v for k, v in details.items() if k != "api_keys"}
    return copy


async def created_event(stripe: StripeApi, sandbox_id: str) -> tuple[str, datetime, str | None] | None:
    """(id, created, context) of the sandbox's `.created` event on Stripe, or None if it is not listed (yet)."""
    try:
        # the user waits for this answer: it is part of creating their sandbox
        page = await stripe.list_events({"object_id": sandbox_id, "limit": 20}, priority=Priority.USER)
    except StripeError as exc:
        log.info("cannot list the events of sandbox %s, registering it without its event: %s", sandbox_id, exc)
        return None
    for event in page.get("data") or []:
        if isinstance(event, dict) and event.get("type") == CREATED and isinstance(event.get("id"), str):
            try:
                created = datetime.fromisoformat(str(event.get("created")))
            except ValueError:
                continue
            context = event.get("context")
            return event["id"], created.astimezone(UTC), context if isinstance(context, str) else None
    return None


async def register_created(applier: Applier, stripe: StripeApi, sandbox: Mapping[str, Any]) -> None:
    """Apply the observation "this sandbox was created as Stripe says" in the consumer's transaction."""
    sandbox_id = str(sandbox["id"])
    found = await created_event(stripe, sandbox_id)
    if found is None:
        event_id, created, context = f"sandbox_api:{sandbox_id}:created", datetime.now(UTC), None
    else:
        event_id, created, context = found
    if await applier.already_processed([event_id]):
        return  # the consumer got the webhook first
    record = Record(SOURCE_TOPIC, 0, 0, sandbox_id.encode(), b"", (), int(created.timestamp() * 1000))
    inbound = Inbound(record, event_id, CREATED, Action.OBSERVE, sandbox_id, context, created,
                      from_stripe=found is not None)
    fetched = without_keys(sandbox)
    await applier.apply([Observation(sandbox_id, [inbound], fetched, observed_state(fetched))], [], [])
