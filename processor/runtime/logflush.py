"""Logs written before the process dies of SIGTERM.

uvicorn (the ingress, the emulator) handles SIGTERM itself, shuts down, restores the handler it found and raises
the signal again so the process ends "killed by SIGTERM" as supervisors expect. With the default handler that
last step kills the interpreter at once: logging's exit hook never runs, and whatever a buffered handler still
holds ("Application shutdown complete", the last access-log lines) is lost. The handler installed here is the
one uvicorn finds and restores: it flushes every log handler and the standard streams, then lets the signal
take its default course, so the exit status is unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from types import FrameType

from processor.runtime import logs


def flush_logs() -> None:
    """Write out what the log writer thread, every handler of every logger and the standard streams still
    hold."""
    logs.drain()
    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            with contextlib.suppress(Exception):  # a closed stream must not stop the others from flushing
                handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _flush_then_die(signum: int, frame: FrameType | None) -> None:
    flush_logs()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def flush_logs_on_sigterm() -> None:
    """Flush logs before a SIGTERM ends the process (every command installs this first; a command that
    handles SIGTERM itself, such as an asyncio loop's graceful stop, replaces it while it runs)."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _flush_then_die)
