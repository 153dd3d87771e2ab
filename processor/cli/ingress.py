"""`processor ingress`: serve POST /webhooks/stripe with uvicorn, in one or several worker processes.

Shutdown on SIGTERM/SIGINT is graceful: uvicorn stops accepting, lets in-flight requests finish (up to
`--graceful-timeout`), then each worker's lifespan flushes and stops its producer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from typing import Any, ClassVar

from starlette.applications import Starlette

from processor.errors import ConfigError
from processor.ingress.app import build_app
from processor.runtime import logs
from processor.runtime.httplimits import LimitedHttpProtocol
from processor.runtime.serving import freeze_startup_heap, http_limits
from processor.settings import Settings

#: Kubernetes waits 30 s after SIGTERM before SIGKILL; finish in-flight deliveries well before that
DEFAULT_GRACEFUL_TIMEOUT_S = 25


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("ingress", help="serve the Stripe webhook endpoint")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--host", help="listen address (default PROCESSOR_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default PROCESSOR_PORT or 8000)")
    parser.add_argument(
        "--graceful-timeout",
        type=int,
        default=DEFAULT_GRACEFUL_TIMEOUT_S,
        help=f"seconds to finish in-flight requests on shutdown (default {DEFAULT_GRACEFUL_TIMEOUT_S})",
    )
    parser.set_defaults(handler=run)


class WorkerHttpProtocol(LimitedHttpProtocol):
    """The HTTP protocol of a worker process, importable by name (uvicorn passes it to spawned workers as a
    string); `create_app` gives it the limits from the worker's settings before the first connection."""

    waiting: ClassVar[dict[LimitedHttpProtocol, None]] = {}
    sweeping: ClassVar[list[bool]] = [False]


def create_app() -> Starlette:
    """The app of one worker process (uvicorn factory): settings from the environment, log opened at start."""
    settings = Settings.from_env()
    # a worker process does not run `cli.main`: the same set-up, from the variables `run` passed down
    logs.configure(logs.LogOptions.from_env(os.environ))
    WorkerHttpProtocol.limits = http_limits(settings)
    app = build_app(settings)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # one worker, serving its own /metrics
        app.state.ingress.metrics.add_process_metrics()
    freeze_startup_heap()
    return app


def _serve_metrics(host: str, port: int) -> None:
    """/metrics of every worker on `port`, from this (parent) process, in a thread of prometheus_client's."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)


def run(args: argparse.Namespace) -> int:
    """Validate the configuration, then serve until a signal arrives."""
    import uvicorn

    settings = Settings.from_env()  # fail here, once, with the variable's name, rather than in every worker
    if not settings.stripe_webhook_secrets:
        raise ConfigError("STRIPE_WEBHOOK_SECRETS", "the ingress needs at least one webhook signing secret")
    if args.workers < 1:
        raise ConfigError("--workers", "must be at least 1")
    # worker processes log as this one does (they read the same variables)
    os.environ[logs.FORMAT_VARIABLE] = args.log_options.format
    os.environ[logs.LEVEL_VARIABLE] = args.log_options.level
    metrics_dir = None
    separate_metrics = settings.metrics_port is not None
    if (args.workers > 1 or separate_metrics) and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # workers inherit this before importing prometheus_client, so /metrics sums all of them
        metrics_dir = tempfile.mkdtemp(prefix="processor-ingress-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        if settings.metrics_port is not None:
            _serve_metrics(settings.host, settings.metrics_port)
        uvicorn.run(
            "processor.cli.ingress:create_app",
            factory=True,
            http="processor.cli.ingress:WorkerHttpProtocol",
            ws="none",
            host=args.host or settings.host,
            port=settings.port if args.port is None else args.port,
            workers=args.workers,
            lifespan="on",
            log_config=None,  # our log lines, set up by `cli.main` and in each worker
            access_log=False,  # the app logs every delivery with its event id and outcome
            # the app reads neither the client's address nor the scheme, so X-Forwarded-* need not be looked for
            # on every request (a second pass over the headers)
            proxy_headers=False,
            timeout_graceful_shutdown=args.graceful_timeout,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
