"""Keep a long-running part of `processor run` running: restart it with backoff when it fails.

In the distributed deployment a worker that cannot go on ends its process and the orchestrator starts a new
one. `processor run` is the one process on a laptop or a small machine, with nobody to restart it: a worker
that died left webhooks piling up in the log until someone read /readyz. Restarting is safe because the worker
commits offsets only after applying a batch and its handlers are idempotent: a restarted worker re-reads
from the last commit and changes nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from processor.backoff import backoff_delay

log = logging.getLogger(__name__)

#: first restart after up to this long (full jitter), doubling while it keeps failing
RESTART_BASE_S = 1.0
#: never wait longer than this between restarts; a run that lasted longer starts the backoff over
RESTART_MAX_S = 60.0


async def supervise(
    name: str,
    run: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    *,
    on_restart: Callable[[], None] | None = None,
    base_s: float = RESTART_BASE_S,
    max_s: float = RESTART_MAX_S,
) -> None:
    """`await run(run_stop)` until `stop` is set; each run gets an event of its own (set when `stop` is), so a
    run that sets it on its way out does not stop the others. A run that fails, or ends while `stop` is not
    set, is logged and started again after a jittered, growing backoff."""
    loop = asyncio.get_running_loop()
    failures = 0
    while not stop.is_set():
        run_stop = asyncio.Event()
        forward = asyncio.create_task(_forward(stop, run_stop), name=f"{name} stop")
        started = loop.time()
        try:
            await run(run_stop)
        except Exception:
            log.exception("%s failed", name)
        else:
            if stop.is_set():
                return
            log.error("%s ended on its own", name)
        finally:
            forward.cancel()
        if stop.is_set():
            return
        failures = 1 if loop.time() - started > max_s else failures + 1
        delay = backoff_delay(failures, base_s, max_s)
        log.warning("restarting %s in %.1f s (restart %d in a row)", name, delay, failures)
        if on_restart is not None:
            on_restart()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


async def _forward(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
