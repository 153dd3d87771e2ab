"""JSON answers of the sandbox API, and the one mapping from our errors to HTTP statuses.

Error bodies are `{"error": "<reason code>", "message": "<one sentence>"}`: the code for programs (the same
shape the ingress uses), the message for people. They never echo secrets, and never carry a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from processor import constants as c
from processor.errors import StripeError

log = logging.getLogger("processor.api")

JSON = "application/json"


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """`payload` as JSON (datetimes become RFC 3339 by orjson)."""
    return Response(orjson.dumps(payload), status, dict(headers or {}), JSON)


def error(
    status: int, code: str, message: str, *, param: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    """A small JSON error; 503 always says when to come back."""
    body: dict[str, str] = {"error": code, "message": message}
    if param is not None:
        body["param"] = param
    extra = dict(headers or {})
    if status == 503:
        extra.setdefault("Retry-After", str(c.RETRY_AFTER_SECONDS))
    return json_response(body, status, extra)


def stripe_failure(exc: StripeError) -> Response:
    """503 + Retry-After when retrying later can help (429/5xx/connection), 502 when Stripe refused us."""
    log.warning("Stripe call failed (%s): %s", "retriable" if exc.retriable else "not retriable", exc)
    if exc.retriable:
        return error(503, "stripe_unavailable", "Stripe is unavailable or rate limiting us; retry later.")
    return error(502, "stripe_error", "Stripe rejected the request; retrying the same request will not help.")


def database_failure(exc: Exception) -> Response:
    log.warning("database unavailable: %s", exc)
    return error(503, "database_unavailable", "The database is unavailable; retry later.")
