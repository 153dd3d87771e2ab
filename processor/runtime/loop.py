"""The event loop of the long-running workers: uvloop where it is installed, asyncio's own loop otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # installed with uvicorn[standard] on Linux and macOS
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on uvloop when available: it schedules callbacks and socket I/O with less CPU, which
    a consumer bound by per-request overhead turns into throughput (measured in bench/lifecycle.py)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)
