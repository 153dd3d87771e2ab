"""Stripe's Events APIs as the recovery paths read them: v2 thin events and the v1 snapshot events we handle.

A webhook Stripe could not deliver is still listed by its Events API for 30 days: the v2 ones (claimable
sandboxes) by `GET /v2/core/events`, the v1 `account.application.*` ones by `GET /v1/events`. `replay
--from-stripe` re-publishes them and `reconcile` applies the v1 ones it finds unprocessed, so a dropped
deauthorization is never lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from processor.consumer.inbound import ACCOUNT_TYPES
from processor.lifecycle.messages import rfc3339
from processor.stripe_api.client import StripeApi

#: events per page (Stripe's maximum for both APIs)
PAGE_SIZE = 100


async def v2_events(stripe: StripeApi, since: datetime, until: datetime) -> AsyncIterator[dict[str, Any]]:
    """v2 events created in [since, until], page by page (each call rate-limited by the client).

    Pages come newest first; each page is yielded oldest first, which keeps a sandbox's events in order."""
    params: dict[str, Any] | None = {
        "limit": PAGE_SIZE,
        "created[gte]": rfc3339(since),
        "created[lte]": rfc3339(until),
    }
    page_url: str | None = None
    while True:
        page = await stripe.list_events(params, page_url=page_url)
        data = page.get("data") or []
        for event in reversed(data):
            if isinstance(event, dict) and event.get("object") == "v2.core.event":
                yield event
        page_url = page.get("next_page_url")
        if not page_url or not data:
            return
        params = None  # the next page URL carries the filters


async def v1_account_events(stripe: StripeApi, since: datetime, until: datetime) -> AsyncIterator[dict[str, Any]]:
    """The v1 `account.application.*` events created in [since, until] (whole seconds, as v1 counts them).

    Each page is yielded oldest first; the consumer orders account events by `created` anyway."""
    params: dict[str, Any] = {
        "limit": PAGE_SIZE,
        "created[gte]": int(since.timestamp()),
        "created[lte]": int(until.timestamp()),
        **{f"types[{n}]": event_type for n, event_type in enumerate(sorted(ACCOUNT_TYPES))},
    }
    while True:
        page = await stripe.list_v1_events(params)
        data = [e for e in page.get("data") or [] if isinstance(e, dict)]
        for event in reversed(data):
            if event.get("object") == "event" and event.get("type") in ACCOUNT_TYPES:
                yield event
        if not page.get("has_more") or not data or not isinstance(data[-1].get("id"), str):
            return
        params = {**params, "starting_after": data[-1]["id"]}
