"""`processor run`: the whole service in one process (embedded default when nothing is configured)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
from pathlib import Path

from processor.errors import ConfigError
from processor.runtime import loop as eventloop
from processor.runtime.service import (
    DEFAULT_RECONCILE_INTERVAL_S,
    EMULATOR_STATE_FILE,
    EmulatorOptions,
    ServiceInfo,
    run_service,
)
from processor.runtime.serving import freeze_startup_heap
from processor.settings import Settings


async def _main(settings: Settings, emulator: EmulatorOptions, reconcile_interval_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)

    def ready(info: ServiceInfo) -> None:
        freeze_startup_heap()  # everything is built and connected: the long-lived part of the heap exists now
        print(info.banner(), flush=True)

    await run_service(settings, stop, reconcile_interval_s=reconcile_interval_s, on_ready=ready, emulator=emulator)
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
    emulator = EmulatorOptions(args.emulator_port, emulator_knobs(args.emulator_options), args.emulator_keep_state)
    eventloop.run(_main(settings, emulator, args.reconcile_interval))
    return 0


def emulator_knobs(options: list[str]) -> dict[str, object]:
    """`KNOB=VALUE` options as knob changes (VALUE read as JSON, else as a string); ConfigError if one is not a
    knob or has a bad value, before anything starts."""
    from processor.dev.emulator.config import Knobs

    changes: dict[str, object] = {}
    for option in options:
        name, sep, raw = option.partition("=")
        if not sep or not name:
            raise ConfigError("--emulator-option", f"{option!r} is not KNOB=VALUE")
        try:
            changes[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            changes[name.strip()] = raw
    try:
        Knobs().updated(changes)
    except (ValueError, TypeError) as exc:
        raise ConfigError("--emulator-option", str(exc)) from None
    return changes


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="ingress, sandbox API, consumer and relay in one process")
    parser.add_argument("--data-dir", help="where the embedded PostgreSQL and local secrets live (default ./var)")
    parser.add_argument("--port", type=int, help="HTTP port (default $PROCESSOR_PORT or 8000)")
    parser.add_argument("--emulator-port", type=int, default=12111,
                        help="port of the bundled Stripe emulator when STRIPE_API_KEY is unset (0 = any free)")
    parser.add_argument(
        "--emulator-option", action="append", default=[], dest="emulator_options", metavar="KNOB=VALUE",
        help="a knob of the bundled emulator at start, e.g. delivery_enabled=false or duplicate_rate=0.1 (VALUE is"
        " JSON; repeatable; the knobs are those of POST /_emulator/config)",
    )
    parser.add_argument(
        "--emulator-keep-state", action="store_true",
        help=f"keep the bundled emulator's sandboxes and events in DATA_DIR/{EMULATOR_STATE_FILE} across restarts"
        " (written every 30 s and at stop)",
    )
    parser.add_argument("--reconcile-interval", type=float, default=DEFAULT_RECONCILE_INTERVAL_S, metavar="SECONDS",
                        help="look for sandboxes with missed webhooks this often (0 = off; default 600)")
    parser.set_defaults(handler=_run)
