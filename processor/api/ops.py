"""The operator API: replay, reconcile, DLQ, sandbox and event inspection over HTTP, behind a bearer token.

`ops_routes(...)` returns Starlette routes under /v1/ops that the processor's app mounts. Every request must
carry `Authorization: Bearer <token>` with one of PROCESSOR_API_TOKENS (the sandbox API's `BearerAuth`); with
no token configured every request is refused (`auth.authenticated`, the same check as the sandbox API's). Bodies
and answers are JSON, lists are pages (`processor.paging`), errors are RFC 9457 problems
(`processor.api.responses.problem`), as everywhere under /v1.

Replays, DLQ purges and reconcile passes read the whole log, DLQ or sandbox table (a reconcile fetches from
Stripe at the key's rate), which takes longer than a client waits: POST starts a background job
(`processor.operations.jobs`) and answers 202 with the job and a Location to poll (`/v1/ops/replays/{id}`,
`/v1/ops/jobs/{id}`); 429 when this process runs as many jobs as it may.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from processor.api import ops_input as given
from processor.api.auth import BearerAuth, Principal, authenticated
from processor.api.ops_input import BadRequest
from processor.api.responses import Endpoint, json_response, problem
from processor.db.pool import Database
from processor.errors import ProcessorError
from processor.eventlog.base import EventLog
from processor.operations import dlq as dlq_ops
from processor.operations.event_lookup import DEFAULT_PAGE, list_processed, show_event, unmatched_account_events
from processor.operations.inspect import DEFAULT_LAST, DEFAULT_SANDBOX_PAGE, list_sandboxes, show_sandbox
from processor.operations.jobs import Job, OperatorJobs
from processor.operations.reconcile import DEFAULT_AGE
from processor.operations.replay import ReplayRun, list_replay_runs
from processor.operations.status import read_status
from processor.operations.timespec import parse_duration, parse_moment
from processor.paging import InvalidPage, Page, parse_limit
from processor.settings import Settings
from processor.stripe_api.client import StripeApi

log = logging.getLogger(__name__)

#: answers to errors an operator can act on: the run is going on elsewhere, or this process is at its limit
_STATUS_OF_CODE = {"replay_in_progress": 409, "reconcile_in_progress": 409, "replays_busy": 429, "jobs_busy": 429}
#: replay runs per page of GET /v1/ops/replays unless asked otherwise
DEFAULT_RUNS_PAGE = 50


@dataclass(frozen=True, slots=True)
class Ops:
    """What every operator endpoint works on."""

    settings: Settings
    log: EventLog
    db: Database
    stripe: StripeApi | None
    jobs: OperatorJobs


OpsHandler = Callable[[Ops, Request], Awaitable[Response]]


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


def _started(job: Job, location: str) -> Response:
    """202: the job runs; its state is at `location`."""
    return json_response(job.as_dict(), 202, {"Location": location})


async def post_replay(ops: Ops, request: Request) -> Response:
    body = await given.json_body(request)
    replay_request = given.replay_request(body)
    now = datetime.now(UTC)
    for moment in (replay_request.since, replay_request.until):
        if moment is not None:
            parse_moment(moment, now)  # ValueError -> 400 now rather than a failed job later
    job = await ops.jobs.start_replay(replay_request, dry_run=given.flag(body, "dry_run"),
                                      run_id=given.text(body, "run_id"))
    return _started(job, f"/v1/ops/replays/{quote(job.id, safe='')}")


def _run_view(run: ReplayRun) -> dict[str, Any]:
    """A replay run of the table (any process's) in the shape of a job."""
    return {
        "id": run.run_id,
        "kind": "replay",
        "status": run.status,
        "params": run.params,
        "progress": {"done": run.counts.get("read", 0), "expected": None},
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "result": {"run_id": run.run_id, "source": run.source, **run.counts} if run.finished_at else None,
        "error": None,
    }


async def get_replays(ops: Ops, request: Request) -> Response:
    """The replay jobs of every replica (dry runs included), then the runs of the table no job stands for."""
    limit = parse_limit(request.query_params.get("limit"), DEFAULT_RUNS_PAGE)
    local = [job.as_dict() for job in await ops.jobs.jobs("replay")]
    known = {job["id"] for job in local}
    runs = [_run_view(run) for run in await list_replay_runs(ops.db, limit=limit) if run.run_id not in known]
    return json_response(Page((local + runs)[:limit], None).as_dict())


async def get_replay(ops: Ops, request: Request) -> Response:
    run_id = request.path_params["run_id"]
    job = await ops.jobs.get(run_id)
    if job is not None and job.kind == "replay":
        return json_response(job.as_dict())
    found = await list_replay_runs(ops.db, run_id=run_id, limit=1) if "\x00" not in run_id else []
    if not found:
        return problem(404, "not_found", "No such replay run.")
    return json_response(_run_view(found[0]))


async def post_dlq_purge(ops: Ops, request: Request) -> Response:
    body = await given.json_body(request)
    coordinates = given.purge_coordinates(body)
    job = await ops.jobs.start_purge(given.dlq_filter(body), coordinates)
    return _started(job, f"/v1/ops/jobs/{quote(job.id, safe='')}")


async def get_jobs(ops: Ops, request: Request) -> Response:
    return json_response(Page([job.as_dict() for job in await ops.jobs.jobs()], None).as_dict())


async def get_job(ops: Ops, request: Request) -> Response:
    job = await ops.jobs.get(request.path_params["job_id"])
    if job is None:
        return problem(404, "not_found", "No such job (finished jobs are kept for a while).")
    return json_response(job.as_dict())


async def post_reconcile(ops: Ops, request: Request) -> Response:
    if ops.stripe is None:
        raise BadRequest("no Stripe client is configured")
    body = await given.json_body(request)
    age_text = given.text(body, "age")
    job = await ops.jobs.start_reconcile(
        age=parse_duration(age_text) if age_text else DEFAULT_AGE,
        dry_run=given.flag(body, "dry_run"),
        discover=body.get("discover", True) is not False,
        limit=given.reconcile_limit(body, 10_000) if "limit" in body else None,
    )
    return _started(job, f"/v1/ops/jobs/{quote(job.id, safe='')}")


async def get_dlq(ops: Ops, request: Request) -> Response:
    query = request.query_params
    page = await dlq_ops.page_dlq(
        ops.settings,
        ops.log,
        ops.db,
        given.dlq_filter(query),
        include_resolved=given.flag(query, "include_resolved"),
        limit=parse_limit(query.get("limit"), dlq_ops.DEFAULT_PAGE),
        cursor=given.text(query, "cursor"),
    )
    return json_response(page.as_dict())


async def get_dlq_entry(ops: Ops, request: Request) -> Response:
    entry = await dlq_ops.show_dlq(ops.settings, ops.log, ops.db, request.path_params["coordinate"])
    if entry is None:
        return problem(404, "not_found", "No such dead-lettered record.")
    return json_response(entry.detail())


async def get_sandboxes(ops: Ops, request: Request) -> Response:
    query = request.query_params
    stuck = given.text(query, "stuck_for")
    page = await list_sandboxes(
        ops.db,
        state=given.text(query, "state"),
        stuck_for=parse_duration(stuck) if stuck else None,
        limit=parse_limit(query.get("limit"), DEFAULT_SANDBOX_PAGE),
        cursor=given.text(query, "cursor"),
    )
    return json_response(page.as_dict())


async def get_sandbox(ops: Ops, request: Request) -> Response:
    query = request.query_params
    before = given.text(query, "before")
    if before is not None and not before.isdigit():
        raise BadRequest("before must be a history id (the history_next of the previous page)")
    found = await show_sandbox(
        ops.db,
        request.path_params["sandbox_id"],
        last=parse_limit(query.get("limit"), DEFAULT_LAST),
        before=None if before is None else int(before),
    )
    if found is None:
        return problem(404, "not_found", "No such sandbox.")
    return json_response(found)


async def get_status(ops: Ops, request: Request) -> Response:
    return json_response((await read_status(ops.settings, ops.log, ops.db)).as_dict())


async def get_events(ops: Ops, request: Request) -> Response:
    query = request.query_params
    page = await list_processed(
        ops.db,
        sandbox_id=given.text(query, "sandbox_id"),
        outcome=given.text(query, "outcome"),
        event_type=given.text(query, "event_type"),
        limit=parse_limit(query.get("limit"), DEFAULT_PAGE),
        cursor=given.text(query, "cursor"),
    )
    return json_response(page.as_dict())


async def get_event(ops: Ops, request: Request) -> Response:
    found = await show_event(ops.settings, ops.log, ops.db, request.path_params["event_id"])
    if found is None:
        return problem(404, "not_found", "No event with this id was processed, recorded or dead-lettered.")
    return json_response(found)


async def get_unmatched(ops: Ops, request: Request) -> Response:
    query = request.query_params
    limit = parse_limit(query.get("limit"), DEFAULT_PAGE)
    page = await unmatched_account_events(ops.db, limit=limit, cursor=given.text(query, "cursor"))
    return json_response(page.as_dict())


_ROUTES: tuple[tuple[str, OpsHandler, str], ...] = (
    ("/v1/ops/replay", post_replay, "POST"),
    ("/v1/ops/replays", get_replays, "GET"),
    ("/v1/ops/replays/{run_id}", get_replay, "GET"),
    ("/v1/ops/reconcile", post_reconcile, "POST"),
    ("/v1/ops/dlq", get_dlq, "GET"),
    ("/v1/ops/dlq/purge", post_dlq_purge, "POST"),
    ("/v1/ops/dlq/{coordinate}", get_dlq_entry, "GET"),
    ("/v1/ops/jobs", get_jobs, "GET"),
    ("/v1/ops/jobs/{job_id}", get_job, "GET"),
    ("/v1/ops/sandboxes", get_sandboxes, "GET"),
    ("/v1/ops/sandboxes/{sandbox_id}", get_sandbox, "GET"),
    ("/v1/ops/status", get_status, "GET"),
    ("/v1/ops/events", get_events, "GET"),
    ("/v1/ops/events/{event_id}", get_event, "GET"),
    ("/v1/ops/account_events/unmatched", get_unmatched, "GET"),
)


def ops_routes(settings: Settings, log_: EventLog, db: Database, stripe: StripeApi | None,
               jobs: OperatorJobs | None = None) -> list[Route]:
    """The /v1/ops routes on an open log, database, (for replay from Stripe, reconcile) Stripe client and the
    process's operator jobs (a registry of their own when none is given; whoever serves them stops it)."""
    auth = BearerAuth(settings.api_tokens)  # the same check and 401 answer as the sandbox API
    ops = Ops(settings, log_, db, stripe, jobs or OperatorJobs(settings, log_, db, stripe))
    return [
        Route(path, authenticated(auth, _operator_errors(functools.partial(handler, ops))), methods=[method])
        for path, handler, method in _ROUTES
    ]
