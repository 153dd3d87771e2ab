"""Keeps the one-time API keys of a new sandbox out of the logs, whatever the log level.

The Stripe SDK logs every response body at DEBUG on the `stripe` logger; the create response carries the
sandbox's secret keys. This filter drops those records (the status line is logged separately and kept).
Every StripeApi installs it, so no path that talks to Stripe can leak the keys.
"""

from __future__ import annotations

import logging

_SDK_LOGGER = "stripe"
_BODY_MARKER = "API response body"


class DropResponseBodies(logging.Filter):
    """Drops the SDK's "API response body" records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _BODY_MARKER not in str(record.msg)


def install() -> None:
    """Add the filter to the SDK's logger once (safe to call many times)."""
    logger = logging.getLogger(_SDK_LOGGER)
    if not any(isinstance(f, DropResponseBodies) for f in logger.filters):
        logger.addFilter(DropResponseBodies())
