"""`processor run`: ingress, sandbox API, operator API, consumer and relay in one process.

With nothing configured this is the embedded default: a private PostgreSQL under the data directory, the
PostgreSQL-table event log, and (without STRIPE_API_KEY) the bundled Stripe emulator delivering its webhooks
to this process. Every part is the same code the distributed deployment runs as separate processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from processor import constants as c
from processor import localsecrets
from processor.api.app import build_api_routes
from processor.api.bodylimit import API_PREFIX, BodyLimit
from processor.api.edge import EdgeGuard
from processor.api.ops import ops_routes
from processor.api.responses import problem
from processor.console.app import build_console_app, console_routes
from processor.db.embedded import stop_embedded_server
from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.eventlog.factory import open_event_log
from processor.eventlog.kafka.admin import ensure_topics as ensure_kafka_topics
from processor.eventlog.kafka.topics import TOPICS
from processor.ingress.app import build_app as build_ingress_app
from processor.ingress.metrics import IngressMetrics
from processor.operations.jobs import OperatorJobs
from processor.runtime.metrics import WorkerMetrics
from processor.runtime.reconciler import run_reconciler
from processor.runtime.serving import http_limits, server_config
from processor.runtime.supervise import supervise
from processor.runtime.worker import WorkerOptions, WorkerStatus, run_worker
from processor.settings import Secret, Settings
from processor.stripe_api.budget import Priority, shared_budget
from processor.stripe_api.client import StripeApi

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What `processor run` tells its user once everything is up."""

    base_url: str
    webhook_url: str
    log_backend: str
    database: str
    stripe: str
    secrets_file: str
    settings: Settings = dataclasses.field(repr=False)
    emulator_url: str | None = None
    emulator_token: str | None = dataclasses.field(default=None, repr=False)

    def banner(self) -> str:
        return "\n".join([
            f"processor is running on {self.base_url}",
            f"  event log : {self.log_backend}",
            f"  database  : {self.database}",
            f"  Stripe    : {self.stripe}",
            f"  webhook URL to give Stripe: {self.webhook_url}",
            f"  API token and signing key: {self.secrets_file} (mode 0600)",
            f"  operator console: {self.base_url}/console/ (sign in with the API token)",
            *([f"  emulator control token: {self.emulator_token} (X-Emulator-Token header; "
               "also `emulator_token` in the secrets file)"] if self.emulator_token else []),
            "  press Ctrl-C to stop",
        ])


@dataclass(frozen=True, slots=True)
class _Backend:
    settings: Settings
    emulator_url: str | None = None
    emulator_token: str | None = dataclasses.field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class EmulatorOptions:
    """How `processor run` starts its bundled emulator (used when STRIPE_API_KEY is unset)."""

    port: int = 0
    #: knobs set at start (emulator/config.py `Knobs`: duplicate_rate, delivery_enabled, ...)
    knobs: Mapping[str, object] = dataclasses.field(default_factory=dict)
    #: keep Stripe's side (sandboxes, events) in EMULATOR_STATE_FILE under the data directory across restarts
    keep_state: bool = False


#: the bundled emulator's state under the data directory (with EmulatorOptions.keep_state)
EMULATOR_STATE_FILE = "emulator-state.json"


@contextlib.asynccontextmanager
async def _stripe_backend(settings: Settings, local: localsecrets.LocalSecrets,
                          emulator: EmulatorOptions) -> AsyncIterator[_Backend]:
    """Real Stripe when STRIPE_API_KEY is set; otherwise the bundled emulator, wired to our webhook URL."""
    if settings.stripe_api_key is not None:
        if not settings.stripe_webhook_secrets:
            from processor.errors import ConfigError

            raise ConfigError("STRIPE_WEBHOOK_SECRETS", "required when STRIPE_API_KEY is set")
        yield _Backend(settings)
        return
    from processor.dev.emulator.config import EmulatorConfig, Knobs
    from processor.dev.emulator.runner import running_emulator

    # one source for the pair: the emulator signs with the secret the ingress verifies with (the configured
    # one when STRIPE_WEBHOOK_SECRETS is set, else the generated one)
    webhook_secrets = settings.stripe_webhook_secrets or (local.webhook_secret,)
    config = EmulatorConfig(
        port=emulator.port, knobs=Knobs().updated(emulator.knobs),
        state_file=settings.data_dir / EMULATOR_STATE_FILE if emulator.keep_state else None,
    )
    async with running_emulator(config) as running:
        running.add_webhook_endpoint(f"{settings.public_url}/webhooks/stripe", webhook_secrets[0].reveal())
        localsecrets.record(local.path, "emulator_token", running.control_token)
        yield _Backend(dataclasses.replace(
            settings, stripe_api_key=Secret(running.api_key), stripe_api_base=running.base_url,
            stripe_webhook_secrets=webhook_secrets,
        ), running.base_url, running.control_token)


async def _ensure_topics(settings: Settings, event_log: EventLog) -> None:
    """Create missing topics: on Kafka with the settings of processor/eventlog/kafka/topics.py (compaction for
    sandbox.state, retention, message size), replicated as widely as the cluster allows up to the spec's factor."""
    if settings.embedded_log:
        await event_log.ensure_topics([settings.topic(name) for name in c.ALL_TOPICS])
        return
    outcomes = await ensure_kafka_topics(
        settings.kafka_bootstrap_servers, TOPICS, settings.topic_prefix, fit_cluster=True,
        security=settings.kafka_security)
    for outcome in outcomes:
        for drift in outcome.drift:
            log.warning("topic %s differs from processor/eventlog/kafka/topics.py: %s", outcome.name, drift)


def _readiness(event_log: EventLog, worker: WorkerStatus) -> Route:
    """/readyz of the whole process: the ingress's log and the worker (consumer, relay) running."""

    async def readyz(request: Request) -> Response:
        if not event_log.healthy():
            reason = "the event log cannot be written"
        elif not worker.ready():
            reason = ("the worker stopped (see the log for why)" if any(t.done() for t in worker.tasks)
                      else "the consumer is not reading the event log")
        else:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unavailable", "reason": reason}, 503,
                            {"Retry-After": str(c.RETRY_AFTER_SECONDS)})

    return Route("/readyz", readyz, methods=["GET"])


def build_http_app(settings: Settings, event_log: EventLog, db: Database, stripe_api: StripeApi,
                   worker_metrics: WorkerMetrics | None = None,
                   worker_status: WorkerStatus | None = None,
                   ops_stripe: StripeApi | None = None) -> Starlette:
    """One app serving the webhook ingress, the sandbox API and the operator API; /metrics shows the ingress's
    metrics and, given `worker_metrics`, the consumer's and relay's (lag, outbox) too. With
    PROCESSOR_METRICS_PORT, /metrics is left out: `build_metrics_app` serves it on its own. Given
    `worker_status`, /readyz also turns red while the worker is not running or its consumer cannot read the log.
    `ops_stripe` is the Stripe client of operator jobs (replay, reconcile), at a lower priority than the API's."""
    ingress_app = build_ingress_app(settings, event_log)
    metrics = _metrics_route(ingress_app.state.ingress.metrics, worker_metrics)
    routes: list[BaseRoute] = [r for r in ingress_app.routes if getattr(r, "path", None) != "/metrics"]
    if worker_status is not None:
        routes = [r for r in routes if getattr(r, "path", None) != "/readyz"]
        routes.append(_readiness(event_log, worker_status))
    if settings.metrics_port is None:
        routes.append(metrics)
    routes += build_api_routes(settings, db, stripe_api)
    jobs = OperatorJobs(settings, event_log, db, ops_stripe or stripe_api)  # one limit for the API and console
    routes += ops_routes(settings, event_log, db, ops_stripe or stripe_api, jobs)
    console = build_console_app(settings, event_log, db, ops_stripe or stripe_api,
                                ingress_metrics=ingress_app.state.ingress.metrics, jobs=jobs)
    routes += console_routes(console)
    middleware = [Middleware(EdgeGuard), Middleware(BodyLimit, max_bytes=settings.max_body_bytes)]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: _http_error},
                    lifespan=functools.partial(_stopping_jobs, jobs))
    app.state.metrics_route = metrics
    app.state.operator_jobs = jobs
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405: a problem under /v1, as every API error is; plain text elsewhere."""
    if not isinstance(exc, HTTPException):  # the only class it is registered for
        raise exc
    if not request.url.path.startswith(API_PREFIX):  # what Starlette answers without this handler
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return PlainTextResponse(exc.detail, exc.status_code, exc.headers)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    return problem(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}.", headers=exc.headers)


def _metrics_route(ingress_metrics: IngressMetrics, worker_metrics: WorkerMetrics | None) -> Route:
    async def metrics(request: Request) -> Response:
        body = ingress_metrics.exposition() + (worker_metrics.exposition() if worker_metrics else b"")
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return Route("/metrics", metrics, methods=["GET"])


def build_metrics_app(http_app: Starlette) -> Starlette:
    """GET /metrics of `http_app` alone, for PROCESSOR_METRICS_PORT."""
    return Starlette(routes=[http_app.state.metrics_route])


@contextlib.asynccontextmanager
async def _stopping_jobs(jobs: OperatorJobs, app: Starlette) -> AsyncIterator[None]:
    """The app's lifespan: at shutdown, running operator jobs are cancelled and marked interrupted (a replay
    resumes when run again), so none is left running with nobody to finish it."""
    yield
    await jobs.stop()


async def _stop_server(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await asyncio.gather(task, return_exceptions=True)


#: how often `processor run` looks for sandboxes whose webhooks went missing (one replica at a time)
DEFAULT_RECONCILE_INTERVAL_S = 600.0


async def run_service(settings: Settings, stop: asyncio.Event, *, emulator_port: int = 0,
                      reconcile_interval_s: float = DEFAULT_RECONCILE_INTERVAL_S,
                      on_ready: Callable[[ServiceInfo], None] | None = None,
                      emulator: EmulatorOptions | None = None) -> None:
    """Run everything until `stop` is set (Ctrl-C/SIGTERM in the CLI); then stop in reverse order."""
    local = localsecrets.load_or_create(settings.data_dir)
    settings = dataclasses.replace(
        settings,
        signing_key=settings.signing_key or local.signing_key,
        api_tokens=settings.api_tokens or (local.api_token,),
    )
    async with contextlib.AsyncExitStack() as stack:
        backend = await stack.enter_async_context(_stripe_backend(
            settings, local, emulator or EmulatorOptions(port=emulator_port)))
        settings = backend.settings
        db = await _open_database(stack, settings)
        event_log = await stack.enter_async_context(open_event_log(settings, db))
        await _ensure_topics(settings, event_log)
        worker_metrics, worker_status = WorkerMetrics(), WorkerStatus()
        stripe_api, background_stripe = await _stripe_clients(stack, settings, db, worker_metrics)
        http_app = build_http_app(settings, event_log, db, stripe_api, worker_metrics, worker_status,
                                  ops_stripe=background_stripe)
        server = _http_server(stack, settings, http_app)
        worker_stop = asyncio.Event()
        # nobody else restarts a part of this one process: a failed worker is started again, with backoff
        worker = asyncio.create_task(supervise(
            "worker",
            lambda run_stop: run_worker(settings, event_log, db, run_stop, WorkerOptions(), worker_metrics,
                                        worker_status),
            worker_stop, on_restart=worker_metrics.worker_restarts.inc,
        ), name="worker")
        reconciler: asyncio.Task[None] | None = None
        if reconcile_interval_s > 0:
            reconciler = asyncio.create_task(
                run_reconciler(settings, db, background_stripe, reconcile_interval_s, worker_stop, event_log=event_log,
                               metrics=worker_metrics), name="reconciler")
        web = asyncio.create_task(server.serve(), name="http")
        while not server.started:
            if web.done() or worker.done():
                break
            await asyncio.sleep(0.02)
        if server.started and on_ready is not None:
            on_ready(_service_info(settings, backend, db, local))
        await _serve_until_stopped(stop, server, web, http_app)
        worker_stop.set()
        results = await asyncio.gather(worker, web, *([reconciler] if reconciler else []), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result


async def _open_database(stack: contextlib.AsyncExitStack, settings: Settings) -> Database:
    """The database, migrated; it stops with `stack`."""
    db = Database(settings)
    await db.start(upgrade=True)
    if db.embedded:
        # this process owns the embedded server (adopted if a killed run left it): it stops with the service
        stack.push_async_callback(asyncio.to_thread, stop_embedded_server, settings.data_dir)
    stack.push_async_callback(db.stop)
    return db


async def _stripe_clients(stack: contextlib.AsyncExitStack, settings: Settings, db: Database,
                          metrics: WorkerMetrics) -> tuple[StripeApi, StripeApi]:
    """The Stripe clients of user-facing calls (the API's) and of background ones (the reconciler's, the
    operator API's); they close with `stack`."""
    # one budget for the key in every process; the API's calls are user-facing, the reconciler's take what
    # is left (the worker's consumer draws from it too, in `run_worker`)
    budget = shared_budget(settings, db.pool, metrics.budget)
    user = await stack.enter_async_context(StripeApi(settings, budget=budget, priority=Priority.USER))
    background = await stack.enter_async_context(StripeApi(settings, budget=budget, priority=Priority.BACKGROUND))
    return user, background


def _http_server(stack: contextlib.AsyncExitStack, settings: Settings, http_app: Starlette) -> uvicorn.Server:
    """The (not yet started) server of `http_app`; with PROCESSOR_METRICS_PORT, /metrics is served on that
    port from now on, and stops with `stack`."""
    limits = http_limits(settings)
    server = uvicorn.Server(server_config(
        http_app, host=settings.host, port=settings.port, limits=limits,
        log_level="warning", lifespan="on", timeout_graceful_shutdown=10,
    ))
    if settings.metrics_port is not None:
        metrics_server = uvicorn.Server(server_config(
            build_metrics_app(http_app), host=settings.host, port=settings.metrics_port, limits=limits,
            log_level="warning", lifespan="off",
        ))
        metrics_task = asyncio.create_task(metrics_server.serve(), name="metrics http")
        stack.push_async_callback(_stop_server, metrics_server, metrics_task)
    return server


def _service_info(settings: Settings, backend: _Backend, db: Database, local: localsecrets.LocalSecrets) -> ServiceInfo:
    """What the banner says about a running service."""
    return ServiceInfo(
        base_url=f"http://{settings.host}:{settings.port}",
        webhook_url=f"{settings.public_url}/webhooks/stripe",
        log_backend=("PostgreSQL table (embedded)" if settings.embedded_log
                     else f"Kafka at {','.join(settings.kafka_bootstrap_servers)}"),
        database=("embedded PostgreSQL under " + str(settings.data_dir / "postgres") if db.embedded
                  else "PostgreSQL from PROCESSOR_DATABASE_URL"),
        stripe=f"bundled emulator at {backend.emulator_url}" if backend.emulator_url else settings.stripe_api_base,
        secrets_file=str(local.path), settings=settings, emulator_url=backend.emulator_url,
        emulator_token=backend.emulator_token,
    )


async def _serve_until_stopped(stop: asyncio.Event, server: uvicorn.Server, web: asyncio.Task[None],
                               http_app: Starlette) -> None:
    """Serve until `stop` is set or the server ends; then stop taking webhooks (in-flight requests finish) and
    the operator jobs (replay, purge), before the caller lets the consumer finish its batch."""
    stop_waiter = asyncio.create_task(stop.wait())
    # while a failed worker waits to restart, /readyz is red; webhooks are still taken and kept in the log
    await asyncio.wait([stop_waiter, web], return_when=asyncio.FIRST_COMPLETED)
    stop_waiter.cancel()
    server.should_exit = True
    await asyncio.gather(web, return_exceptions=True)
    await http_app.state.operator_jobs.stop()  # the lifespan did it; a server that failed to start did not
