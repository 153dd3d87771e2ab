"""`processor run` owns its embedded PostgreSQL for the server's whole life, across a crash of the process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from processor.runtime.serving import free_port


async def start_run(data_dir: Path) -> asyncio.subprocess.Process:
    """`processor run` on `data_dir` with nothing configured (embedded default), once it says it is running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "processor", "run", "--data-dir", str(data_dir), "--port", str(free_port()),
        "--emulator-port", "0", "--reconcile-interval", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    assert proc.stdout is not None
    output = ""
    async with asyncio.timeout(90):
        while "press Ctrl-C" not in output:
            line = (await proc.stdout.readline()).decode()
            assert line, "processor run exited early:\n" + output
            output += line
    return proc


def postgres_processes(pgdata: Path) -> list[int]:
    """Pids of live PostgreSQL processes serving `pgdata` (the server and its backends name it in argv)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if argv[0].endswith(b"postgres") and str(pgdata).encode() in argv:
            found.append(int(entry.name))
    return found


async def test_a_clean_stop_after_a_killed_run_leaves_no_postgres_behind(tmp_path: Path) -> None:
    """After `processor run` is SIGKILLed and started again on the same data dir, a clean stop (SIGTERM) stops
    the embedded PostgreSQL the killed process had started: nothing keeps running for that data dir."""
    await asyncio.to_thread(tmp_path.chmod, 0o755)  # the embedded PostgreSQL runs unprivileged when we are root
    data_dir = tmp_path / "var"
    pgdata = data_dir.resolve() / "postgres"
    try:
        first = await start_run(data_dir)
        first.kill()
        await first.wait()
        assert postgres_processes(pgdata), "precondition: the killed process's PostgreSQL outlives it"

        second = await start_run(data_dir)
        second.send_signal(signal.SIGTERM)
        assert second.stdout is not None
        rest = (await asyncio.wait_for(second.stdout.read(), 90)).decode()
        assert await second.wait() == 0, rest

        deadline = time.monotonic() + 30  # the server's own processes may take a moment to exit after it
        left = postgres_processes(pgdata)
        while left and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            left = postgres_processes(pgdata)
        assert left == [], "a PostgreSQL server outlived the clean stop"
    finally:
        for pid in postgres_processes(pgdata):  # whatever this test leaked must not outlive it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
