"""The operator API: replay, reconcile, DLQ, sandbox and event inspection over HTTP, behind a bearer token.

`ops_routes(...)` returns Starlette routes under /v1/ops that the processor's app mounts. Every request must
carry `Authorization: Bearer <token>` with one of PROCESSOR_API_TOKENS (the sandbox API's `BearerAuth`); with
no token configured every request is refused (`auth.authenticated`, the same check as the sandbox API's). Bodies
and answers are JSON, lists are pages (`processor.paging`), errors are RFC 9457 problems
(`processor.api.responses.problem`), as everywhere under /v1.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from processor.api.auth import BearerAuth, Principal, authenticated
from processor.api.responses import Endpoint, json_response, problem
from processor.db.pool import Database
from processor.errors import ProcessorError
from processor.eventlog.base import EventLog
from processor.operations import dlq as dlq_ops
from processor.operations.event_lookup import DEFAULT_PAGE, list_processed, show_event, unmatched_account_events
from processor.operations.inspect import DEFAULT_LAST, DEFAULT_SANDBOX_PAGE, list_sandboxes, show_sandbox
from processor.operations.reconcile import DEFAULT_AGE, reconcile
from processor.operations.replay import SOURCES, OffsetRange, ReplayRequest, parse_offsets, replay
from processor.operations.status import read_status
from processor.operations.timespec import parse_duration
from processor.paging import InvalidPage, parse_limit
from processor.settings import Settings
from processor.stripe_api.client import StripeApi

log = logging.getLogger(__name__)


class BadRequest(Exception):
    """A request the operator must fix; the message goes back in the answer."""


#: answers to errors an operator can act on: the run is going on elsewhere, or this process is at its limit
_STATUS_OF_CODE = {"replay_in_progress": 409, "replays_busy": 429}


def _operator_errors(handler: Endpoint) -> Callable[[Request, Principal], Awaitable[Response]]:
    """The operations' own failures as problems (what `authenticated` maps for every handler comes after)."""

    async def endpoint(request: Request, principal: Principal) -> Response:
        try:
            return await handler(request)
        except InvalidPage:
            raise  # answered as on every list (`responses.guarded`)
        except (BadRequest, ValueError, OverflowError) as exc:  # OverflowError: a number beyond what it names
            return problem(400, "bad_request", str(exc))
        except asyncpg.DataError as exc:
            # the database refused a value it was given (a partition beyond int32, text it cannot encode)
            return problem(400, "bad_request", f"a value is not valid: {type(exc).__name__}")
        except ProcessorError as exc:
            status = _STATUS_OF_CODE.get(exc.code, 503 if exc.retriable else 500)
            return problem(status, exc.code, str(exc))

    return endpoint


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _text(data: dict[str, Any] | Any, name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


def _flag(data: dict[str, Any] | Any, name: str) -> bool:
    value = data.get(name, False)
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


def _reconcile_limit(data: dict[str, Any] | Any, default: int) -> int:
    raw = data.get("limit", default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise BadRequest("limit must be an integer") from None
    if not 1 <= value <= 10_000:
        raise BadRequest("limit must be between 1 and 10000")
    return value


#: partitions are int32 and offsets int64 in the log (Kafka's types); larger numbers name nothing
_MAX_PARTITION, _MAX_OFFSET = 2**31 - 1, 2**63 - 1


def _bounded(ranges: tuple[OffsetRange, ...]) -> tuple[OffsetRange, ...]:
    for r in ranges:
        if r.partition > _MAX_PARTITION or max(r.start, r.end or 0) > _MAX_OFFSET:
            raise BadRequest(f"partition {r.partition} or offsets beyond what a log holds")
    return ranges


def _dlq_filter(data: dict[str, Any] | Any) -> dlq_ops.DlqFilter:
    return dlq_ops.DlqFilter(_text(data, "error_class"), _text(data, "event_type"), _text(data, "sandbox_id"))


def ops_routes(settings: Settings, log_: EventLog, db: Database, stripe: StripeApi | None) -> list[Route]:
    """The /v1/ops routes on an open log, database and (for replay from Stripe, reconcile) Stripe client."""
    auth = BearerAuth(settings.api_tokens)  # the same check and 401 answer as the sandbox API

    async def post_replay(request: Request) -> Response:
        body = await _body(request)
        source = _text(body, "source")
        if source not in SOURCES:
            raise BadRequest(f"source must be one of {', '.join(SOURCES)}")
        offsets = _text(body, "offsets")
        replay_request = ReplayRequest(
            source=source,
            dlq=_dlq_filter(body),
            since=_text(body, "since"),
            until=_text(body, "until"),
            offsets=_bounded(parse_offsets(offsets)) if offsets else (),
            sandbox_id=_text(body, "sandbox_id") if source == "sandbox" else None,
        )
        if source == "sandbox":  # the sandbox is the source here, not a DLQ filter
            replay_request = ReplayRequest(
                source, since=replay_request.since, until=replay_request.until, sandbox_id=replay_request.sandbox_id
            )
        if source == "stripe" and stripe is None:
            raise BadRequest("no Stripe client is configured")
        report = await replay(
            settings,
            log_,
            db,
            replay_request,
            stripe=stripe,
            dry_run=_flag(body, "dry_run"),
            run_id=_text(body, "run_id"),
        )
        return json_response(report.as_dict())

    async def post_reconcile(request: Request) -> Response:
        if stripe is None:
            raise BadRequest("no Stripe client is configured")
        body = await _body(request)
        age_text = _text(body, "age")
        age = parse_duration(age_text) if age_text else DEFAULT_AGE
        limit = _reconcile_limit(body, 10_000) if "limit" in body else None
        report = await reconcile(
            settings,
            db,
            stripe,
            age=age,
            dry_run=_flag(body, "dry_run"),
            discover=body.get("discover", True) is not False,
            limit=limit,
            cursor="http",
        )
        return json_response(report.as_dict())

    async def get_dlq(request: Request) -> Response:
        query = request.query_params
        page = await dlq_ops.page_dlq(
            settings,
            log_,
            db,
            _dlq_filter(query),
            include_resolved=_flag(query, "include_resolved"),
            limit=parse_limit(query.get("limit"), dlq_ops.DEFAULT_PAGE),
            cursor=_text(query, "cursor"),
        )
        return json_response(page.as_dict())

    async def get_dlq_entry(request: Request) -> Response:
        entry = await dlq_ops.show_dlq(settings, log_, db, request.path_params["coordinate"])
        if entry is None:
            return problem(404, "not_found", "No such dead-lettered record.")
        return json_response(entry.detail())

    async def post_dlq_purge(request: Request) -> Response:
        body = await _body(request)
        if body.get("confirm") is not True:
            raise BadRequest('a purge needs "confirm": true')
        coordinates = body.get("coordinates") or []
        if not isinstance(coordinates, list) or not all(isinstance(x, str) for x in coordinates):
            raise BadRequest("coordinates must be a list of partition:offset strings")
        result = await dlq_ops.purge_dlq(settings, log_, db, _dlq_filter(body), coordinates=coordinates)
        return json_response({"purged": result.purged, "deleted_from_log": result.deleted})

    async def get_sandboxes(request: Request) -> Response:
        query = request.query_params
        stuck = _text(query, "stuck_for")
        page = await list_sandboxes(
            db,
            state=_text(query, "state"),
            stuck_for=parse_duration(stuck) if stuck else None,
            limit=parse_limit(query.get("limit"), DEFAULT_SANDBOX_PAGE),
            cursor=_text(query, "cursor"),
        )
        return json_response(page.as_dict())

    async def get_sandbox(request: Request) -> Response:
        query = request.query_params
        before = _text(query, "before")
        if before is not None and not before.isdigit():
            raise BadRequest("before must be a history id (the history_next of the previous page)")
        found = await show_sandbox(
            db,
            request.path_params["sandbox_id"],
            last=parse_limit(query.get("limit"), DEFAULT_LAST),
            before=None if before is None else int(before),
        )
        if found is None:
            return problem(404, "not_found", "No such sandbox.")
        return json_response(found)

    async def get_status(request: Request) -> Response:
        return json_response((await read_status(settings, log_, db)).as_dict())

    async def get_events(request: Request) -> Response:
        query = request.query_params
        page = await list_processed(
            db,
            sandbox_id=_text(query, "sandbox_id"),
            outcome=_text(query, "outcome"),
            event_type=_text(query, "event_type"),
            limit=parse_limit(query.get("limit"), DEFAULT_PAGE),
            cursor=_text(query, "cursor"),
        )
        return json_response(page.as_dict())

    async def get_event(request: Request) -> Response:
        found = await show_event(settings, log_, db, request.path_params["event_id"])
        if found is None:
            return problem(404, "not_found", "No event with this id was processed, recorded or dead-lettered.")
        return json_response(found)

    async def get_unmatched(request: Request) -> Response:
        query = request.query_params
        limit = parse_limit(query.get("limit"), DEFAULT_PAGE)
        page = await unmatched_account_events(db, limit=limit, cursor=_text(query, "cursor"))
        return json_response(page.as_dict())

    def route(path: str, handler: Endpoint, method: str) -> Route:
        return Route(path, authenticated(auth, _operator_errors(handler)), methods=[method])

    return [
        route("/v1/ops/replay", post_replay, "POST"),
        route("/v1/ops/reconcile", post_reconcile, "POST"),
        route("/v1/ops/dlq", get_dlq, "GET"),
        route("/v1/ops/dlq/purge", post_dlq_purge, "POST"),
        route("/v1/ops/dlq/{coordinate}", get_dlq_entry, "GET"),
        route("/v1/ops/sandboxes", get_sandboxes, "GET"),
        route("/v1/ops/sandboxes/{sandbox_id}", get_sandbox, "GET"),
        route("/v1/ops/status", get_status, "GET"),
        route("/v1/ops/events", get_events, "GET"),
        route("/v1/ops/events/{event_id}", get_event, "GET"),
        route("/v1/ops/account_events/unmatched", get_unmatched, "GET"),
    ]
