"""What hostile clients cost a running `processor run`: a huge header, a huge URL, many headers, slow-loris.

    python bench/hostile_http.py --port 8000 --pid <pid of processor run> [--header-mib 256]

Prints, per attack: the answer's status and time, the server's RSS before and after, and the slowest
/healthz answer while the attack ran (asked every 0.2 s on a connection of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def send(port: int, pieces: list[bytes] | bytes, timeout_s: float = 600) -> tuple[str, float]:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(reader.readline())
    try:
        for piece in [pieces] if isinstance(pieces, bytes) else pieces:
            if answer.done():
                break
            writer.write(piece)
            try:
                await writer.drain()
            except ConnectionError:
                break
        async with asyncio.timeout(timeout_s):
            line = await answer
        return line[:12].decode(errors="replace") or "closed", time.monotonic() - started
    except (ConnectionError, TimeoutError) as exc:
        return type(exc).__name__, time.monotonic() - started
    finally:
        answer.cancel()
        writer.close()


async def healthz_watch(port: int, stop: asyncio.Event) -> float:
    slowest = 0.0
    while not stop.is_set():
        status, took = await send(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 60)
        slowest = max(slowest, took if "200" in status else float("inf"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                await stop.wait()
    return slowest


async def attack(name: str, port: int, pid: int, pieces: list[bytes] | bytes) -> None:
    before = rss_mib(pid)
    stop = asyncio.Event()
    watcher = asyncio.create_task(healthz_watch(port, stop))
    status, took = await send(port, pieces)
    after = rss_mib(pid)
    stop.set()
    print(f"{name}: answer {status!r} after {took:.2f} s; RSS {before:.0f} -> {after:.0f} MiB; "
          f"slowest /healthz meanwhile {await watcher:.3f} s", flush=True)


async def slowloris(port: int, connections: int, seconds: float) -> None:
    """Connections that send a head one byte per second; how many the server still holds after `seconds`."""
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    started = time.monotonic()
    for i in range(int(seconds)):
        for _reader, writer in opened:
            if not writer.is_closing():
                with contextlib.suppress(ConnectionError):
                    writer.write(head[i:i + 1])
        await asyncio.sleep(1)
    alive = 0
    for reader, writer in opened:
        try:
            async with asyncio.timeout(0.5):
                await reader.read(65536)  # an answer (408) or EOF: the server let go
        except TimeoutError:
            alive += 1  # still waiting for our head
        except ConnectionError:
            pass
        writer.close()
    print(f"slow-loris: {alive} of {connections} connections still open after {time.monotonic() - started:.0f} s")


async def main(args: argparse.Namespace) -> None:
    chunk = b"a" * (1 << 20)
    await attack(f"{args.header_mib} MiB header", args.port, args.pid,
                 [b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "] + [chunk] * args.header_mib + [b"\r\n\r\n"])
    await attack(f"{args.url_mib} MiB URL", args.port, args.pid,
                 [b"GET /healthz?q="] + [chunk] * args.url_mib + [b" HTTP/1.1\r\nHost: x\r\n\r\n"])
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(200_000))
    await attack("200,000 headers", args.port, args.pid, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    await slowloris(args.port, 40, args.slow_s)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--header-mib", type=int, default=256)
    parser.add_argument("--url-mib", type=int, default=64)
    parser.add_argument("--slow-s", type=float, default=30)
    asyncio.run(main(parser.parse_args()))
