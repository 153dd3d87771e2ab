"""Options shared by the worker commands (`consume`, `relay`): health endpoint and logging."""

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
