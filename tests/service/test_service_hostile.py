"""`processor run` under hostile connections: idle ones against its descriptor limit, bodies that never end;
and /metrics kept off the public port."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from processor.runtime.serving import free_port

#: the descriptor limit of the run under test: the usual soft default on Linux
FD_LIMIT = 1024


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@contextlib.asynccontextmanager
async def processor_run(
    data_dir: Path, database_url: str, **variables: str
) -> AsyncIterator[tuple[int, int, str]]:
    """`processor run` with at most FD_LIMIT descriptors; yields its pid, port and webhook secret."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_"))}
    env.update(variables, PROCESSOR_DATABASE_URL=database_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "processor", "run", "--data-dir", str(data_dir), "--port", str(port),
        "--emulator-port", "0", "--reconcile-interval", "0", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env, preexec_fn=_limit_descriptors,
    )
    assert proc.stdout is not None
    seen = b""
    try:
        async with asyncio.timeout(120):
            while b"press Ctrl-C" not in seen:
                line = await proc.stdout.readline()
                assert line, "processor run exited early:\n" + seen.decode()
                seen += line
        drain = asyncio.create_task(proc.stdout.read())  # keep its pipe from filling up
        secret = json.loads((data_dir / "secrets.json").read_text())["webhook_secret"]
        yield proc.pid, port, secret
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(NameError):
            drain.cancel()


def delivery(secret: str, serial: int) -> bytes:
    body = json.dumps({"id": f"evt_hostile_{serial}_{time.time_ns()}", "object": "event",
                       "type": "account.updated", "account": "acct_hostile", "data": {"object": {}}}).encode()
    ts = int(time.time())
    sig = hmac.new(secret.encode(), b"%d." % ts + body, hashlib.sha256).hexdigest()
    return (b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Stripe-Signature: t=%d,v1=%s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (ts, sig.encode(), len(body), body))


async def status_of(port: int, request: bytes, timeout_s: float = 30) -> int | None:
    """The status of the answer to `request` on a new connection, or None (refused, closed, timed out)."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request)
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    return int(line[9:12]) if line.startswith(b"HTTP/1.1 ") else None


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_idle_connections_beyond_the_descriptor_limit_do_not_lock_out_webhooks(
    tmp_path: Path, pg_dsn: str
) -> None:
    """1,100 idle connections against a 1,024-descriptor limit: a signed webhook still gets 200."""
    async with processor_run(tmp_path / "var", pg_dsn) as (_pid, port, secret):
        assert await status_of(port, delivery(secret, 0)) == 200
        idle = []
        try:
            for _ in range(1100):
                with contextlib.suppress(OSError):
                    idle.append(await asyncio.open_connection("127.0.0.1", port))
            await asyncio.sleep(1)  # let the server accept them all
            answers = [await status_of(port, delivery(secret, i), timeout_s=20) for i in range(1, 6)]
        finally:
            for _reader, writer in idle:
                writer.close()
    assert answers == [200] * 5


async def test_bodies_that_never_end_hold_bounded_memory(tmp_path: Path, pg_dsn: str) -> None:
    """300 deliveries that send 1 MiB less a byte of a 1 MiB body and stall: RSS grows by far less than 300 MiB,
    and a whole delivery sent meanwhile is answered (200, or 503 + Retry-After while the budget is full)."""
    async with processor_run(tmp_path / "var", pg_dsn) as (pid, port, secret):
        before = rss_mib(pid)
        body = b"x" * (1 << 20)
        head = (b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Signature: t=%d,v1=%s\r\n"
                b"Content-Length: %d\r\n\r\n" % (int(time.time()), b"0" * 64, len(body)))
        stalled = []
        try:
            for _ in range(300):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(head + body[:-1])
                stalled.append(writer)
            with contextlib.suppress(ConnectionError):
                await asyncio.gather(*(w.drain() for w in stalled))
            await asyncio.sleep(2)  # let the server read what it will
            during = rss_mib(pid)
            answer = await status_of(port, delivery(secret, 1))
        finally:
            for writer in stalled:
                writer.close()
    print(f"RSS {before:.0f} -> {during:.0f} MiB with 300 stalled bodies; a delivery meanwhile: {answer}")
    assert answer in (200, 503)
    assert during - before < 150, f"RSS {before:.0f} -> {during:.0f} MiB"


async def test_metrics_can_be_served_on_a_port_of_their_own(tmp_path: Path, pg_dsn: str) -> None:
    """With PROCESSOR_METRICS_PORT, /metrics answers there and is not found on the public port."""
    metrics_port = free_port()
    scrape = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    async with processor_run(tmp_path / "var", pg_dsn, PROCESSOR_METRICS_PORT=str(metrics_port)) as (_, port, secret):
        assert await status_of(port, delivery(secret, 0)) == 200
        public = await status_of(port, scrape)
        private = await status_of(metrics_port, scrape)
    assert (public, private) == (404, 200)
