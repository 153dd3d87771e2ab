"""JSON answers of the API (`/v1/*`), and the one mapping from our errors to HTTP statuses.

Every error is an RFC 9457 problem (`application/problem+json`):
`{"type": "about:blank", "title": "<status phrase>", "status": 422, "detail": "<one sentence>", "code":
"<reason code>", "param": "<parameter>"?}`: `code` for programs, `detail` for people, `param` when one
parameter is at fault. Problems never echo secrets and never carry a traceback; a 503 always says when to
come back (Retry-After).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response

from processor import constants as c
from processor.db.pool import DATABASE_ERRORS
from processor.errors import DatabaseUnavailable, StripeError
from processor.paging import InvalidPage

log = logging.getLogger("processor.api")

JSON = "application/json"
PROBLEM = "application/problem+json"
Endpoint = Callable[[Request], Awaitable[Response]]
_DATABASE_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, DatabaseUnavailable)


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """`payload` as JSON (datetimes become RFC 3339 by orjson)."""
    return Response(orjson.dumps(payload), status, dict(headers or {}), JSON)


def problem(
    status: int, code: str, detail: str, *, param: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    """An RFC 9457 problem; `type` is about:blank, so `title` is the status phrase and `code` says which."""
    body: dict[str, object] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if param is not None:
        body["param"] = param
    extra = dict(headers or {})
    if status == 503:
        extra.setdefault("Retry-After", str(c.RETRY_AFTER_SECONDS))
    return Response(orjson.dumps(body), status, extra, PROBLEM)


def stripe_failure(exc: StripeError) -> Response:
    """503 + Retry-After when retrying later can help (429/5xx/connection), 502 when Stripe refused us."""
    log.warning("Stripe call failed (%s): %s", "retriable" if exc.retriable else "not retriable", exc)
    if exc.retriable:
        return problem(503, "stripe_unavailable", "Stripe is unavailable or rate limiting us; retry later.")
    return problem(502, "stripe_error", "Stripe rejected the request; retrying the same request will not help.")


def database_failure(exc: Exception) -> Response:
    log.warning("database unavailable: %s", exc)
    return problem(503, "database_unavailable", "The database is unavailable; retry later.")


def guarded(handler: Endpoint) -> Endpoint:
    """Map failures to problems: nothing leaves a handler as an exception (so no 500 page, no traceback)."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except InvalidPage as exc:
            return problem(400, f"invalid_{exc.param}", f"{exc}.", param=exc.param)
        except StripeError as exc:
            return stripe_failure(exc)
        except _DATABASE_ERRORS as exc:
            # a value the database refused (asyncpg's client-side DataError is a ValueError, the server's a
            # DataError): the caller's to fix, not an outage
            if isinstance(exc, asyncpg.DataError | ValueError):
                return problem(400, "invalid_value", "A value in the request is not valid.")
            return database_failure(exc)
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.url.path)
            return problem(500, "internal_error", "Unexpected error; it was logged.")

    return run
