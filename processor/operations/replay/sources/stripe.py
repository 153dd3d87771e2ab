"""Replay from Stripe's Events APIs: deliveries Stripe never got through, fetched over the authenticated API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime

from processor.ingress.envelope import EnvelopeError
from processor.operations.replay.copies import Candidate, stripe_candidate
from processor.operations.stripe_events import v1_account_events, v2_events
from processor.stripe_api.client import StripeApi

log = logging.getLogger(__name__)


async def candidates(stripe: StripeApi, since: datetime, until: datetime, run_id: str) -> AsyncIterator[Candidate]:
    """The events Stripe created between `since` and `until`, as the ingress would have published them."""
    # the v2 sandbox events, then the v1 account events: the consumer orders account events by `created`
    for events in (v2_events(stripe, since, until), v1_account_events(stripe, since, until)):
        async for event in events:
            try:
                yield stripe_candidate(event, run_id)
            except EnvelopeError as exc:
                log.warning("skipping event from Stripe that is not an event: %s", exc)
