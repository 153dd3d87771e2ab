"""The ingress's own event log: opened in the background and reopened until it works, while the ingress answers.

A misconfigured or unreachable cluster (refused credentials, an untrusted certificate, a broker outage during a
rollout) must not crash the ingress into a restart loop: it stays up, /readyz is red, every delivery gets 503
with Retry-After (Stripe retries for three days, so nothing is lost), and the reason is logged once per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from processor.errors import DatabaseUnavailable, LogUnavailable
from processor.eventlog.base import EventLog
from processor.settings import Settings

_logger = logging.getLogger("processor.ingress")

#: first and longest pause between attempts to open the log
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0


async def hold_event_log(settings: Settings, attach: Callable[[EventLog | None], None], stop: asyncio.Event) -> None:
    """Open the log from `settings`, hand it to `attach`, keep it until `stop`; retry while it cannot open."""
    from processor.eventlog.factory import (
        open_event_log,  # the backends' imports are heavy; only the ingress needs this
    )

    delay, last_reason = RETRY_FIRST_S, ""
    while not stop.is_set():
        try:
            async with open_event_log(settings) as log:
                if last_reason:
                    _logger.warning("event log connected; accepting deliveries again")
                attach(log)
                try:
                    await stop.wait()
                finally:
                    attach(None)  # before the producer flushes and stops
            return
        except (LogUnavailable, DatabaseUnavailable) as exc:
            if str(exc) != last_reason:
                _logger.error("event log unavailable, answering 503 until it opens: %s", exc)
                last_reason = str(exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, RETRY_MAX_S)
