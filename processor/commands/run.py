"""`processor run`: the whole service in one process (embedded default when nothing is configured)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
from pathlib import Path

from processor import eventloop
from processor.service import DEFAULT_RECONCILE_INTERVAL_S, ServiceInfo, run_service
from processor.serving import freeze_startup_heap
from processor.settings import Settings


async def _main(settings: Settings, emulator_port: int, reconcile_interval_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)

    def ready(info: ServiceInfo) -> None:
        freeze_startup_heap()  # everything is built and connected: the long-lived part of the heap exists now
        print(info.banner(), flush=True)

    await run_service(settings, stop, emulator_port=emulator_port, reconcile_interval_s=reconcile_interval_s,
                      on_ready=ready)
    print("processor stopped cleanly", flush=True)


def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    changes: dict[str, object] = {}
    if args.data_dir:
        changes["data_dir"] = Path(args.data_dir)
    if args.port is not None:
        changes["port"] = args.port
        if "PROCESSOR_PUBLIC_URL" not in settings.extra:
            changes["public_url"] = f"http://{settings.host}:{args.port}"
    settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    eventloop.run(_main(settings, args.emulator_port, args.reconcile_interval))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="ingress, sandbox API, consumer and relay in one process")
    parser.add_argument("--data-dir", help="where the embedded PostgreSQL and local secrets live (default ./var)")
    parser.add_argument("--port", type=int, help="HTTP port (default $PROCESSOR_PORT or 8000)")
    parser.add_argument("--emulator-port", type=int, default=12111,
                        help="port of the bundled Stripe emulator when STRIPE_API_KEY is unset (0 = any free)")
    parser.add_argument("--reconcile-interval", type=float, default=DEFAULT_RECONCILE_INTERVAL_S, metavar="SECONDS",
                        help="look for sandboxes with missed webhooks this often (0 = off; default 600)")
    parser.set_defaults(handler=_run)
