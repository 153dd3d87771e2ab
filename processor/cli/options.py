"""Options shared by several commands: the workers' health endpoint and logging, the operator jobs' output."""

from __future__ import annotations

import argparse
import logging

from processor.settings import Settings


def add_health_port(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--health-port", type=int, default=None,
        help="serve /healthz, /readyz and /metrics on this port of $PROCESSOR_HOST (0 = any free port)",
    )


def worker_settings() -> Settings:
    """Settings from the environment, with logging configured at their level."""
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return settings


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """`--progress/--no-progress` and `--json` of the long operator jobs (replay, reconcile)."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
