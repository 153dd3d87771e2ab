"""Serving an ASGI app with uvicorn inside the running event loop, on a free port of this machine.

Every server of ours is configured by `server_config`: httptools with the limits of processor/runtime/httplimits.py,
no WebSockets. The emulator, the demo, the benchmarks and the tests start servers with `serving`;
`processor run` and `processor ingress` own their uvicorn servers because they also handle signals and
shutdown order.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import uvicorn

from processor import constants as c
from processor.runtime.httplimits import SWEEP_INTERVAL_S, HttpLimits, LimitedHttpProtocol, connection_cap
from processor.settings import Settings


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def freeze_startup_heap() -> None:
    """Exempt everything allocated so far (modules, app, settings) from the cyclic garbage collector.

    A full collection walks every tracked object; in a server that is mostly the start-up heap, which never
    becomes garbage. Frozen, it is skipped: bench/ingress.py saw p99 at c=64 fall from 28-35 ms to 7-12 ms.
    Call once per server process, after building the app (not in a test process that builds many apps).
    """
    gc.collect()
    gc.freeze()


def http_limits(settings: Settings) -> HttpLimits:
    """The limits the settings ask for, with the connection cap lowered to what the descriptor limit allows."""
    # the body deadline is a sweep's interval longer than the ingress's own, so that a body which stalls halfway
    # gets the ingress's answer (408 body_timeout, counted and logged as such); this one cuts off a body that
    # never starts, which the ingress awaits without a timer
    return HttpLimits(max_connections=connection_cap(settings.max_connections), head_timeout_s=settings.head_timeout_s,
                      body_timeout_s=c.DEFAULT_BODY_TIMEOUT_S + SWEEP_INTERVAL_S)


def server_config(
    app: Any, *, host: str, port: int, limits: HttpLimits | None = None, **options: Any
) -> uvicorn.Config:
    """A uvicorn configuration with our HTTP limits; `options` are passed on (log level, lifespan, ...)."""
    limits = limits or HttpLimits(max_connections=connection_cap(HttpLimits().max_connections))
    # uvicorn's default log config is a dictConfig, which closes every handler the process has: the one set-up
    # of `runtime.logs` stopped writing as soon as a server started. Without it uvicorn's loggers propagate there.
    options.setdefault("log_config", None)
    return uvicorn.Config(
        app, host=host, port=port, http=LimitedHttpProtocol.with_limits(limits), ws="none",
        timeout_keep_alive=int(limits.keepalive_timeout_s), **options,
    )


@asynccontextmanager
async def serving(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, lifespan: Literal["auto", "on", "off"] = "on",
    limits: HttpLimits | None = None, date_header: bool = True,
) -> AsyncIterator[str]:
    """Serve `app` until the block ends (port 0 = a free one); yields the base URL once it accepts connections.
    `date_header=False` leaves the `Date` header to the app (the emulator's is its own clock)."""
    port = port or free_port(host)
    server = uvicorn.Server(server_config(app, host=host, port=port, limits=limits, log_level="warning",
                                          lifespan=lifespan, date_header=date_header))
    task = asyncio.get_running_loop().create_task(server.serve(), name=f"uvicorn {host}:{port}")
    try:
        while not server.started:
            if task.done():
                task.result()  # re-raises why the server could not start
                raise RuntimeError(f"the server on {host}:{port} stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
