"""What an operator command needs, opened from the settings: the database (migrated), the event log, Stripe."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.eventlog.factory import open_event_log
from processor.settings import Settings
from processor.stripe_api.budget import Priority, shared_budget
from processor.stripe_api.client import StripeApi


@dataclass(frozen=True, slots=True)
class OpsSession:
    settings: Settings
    db: Database
    log: EventLog
    stripe: StripeApi | None


@contextlib.asynccontextmanager
async def ops_session(settings: Settings, *, stripe: bool = False) -> AsyncIterator[OpsSession]:
    """Open database, log and (with `stripe`) the Stripe client; close them all on exit."""
    async with contextlib.AsyncExitStack() as stack:
        db = Database(settings, max_size=4)
        await db.start(upgrade=True)
        stack.push_async_callback(db.stop)
        log = await stack.enter_async_context(open_event_log(settings, db))
        api = None
        if stripe:
            # an operator's replay or reconcile takes what the key's budget has left: users and the consumer
            # come first (creating a sandbox from the CLI is still user-facing: `create_sandbox` says so)
            budget = shared_budget(settings, db.pool)
            api = await stack.enter_async_context(StripeApi(settings, budget=budget, priority=Priority.BACKGROUND))
        yield OpsSession(settings, db, log, api)
