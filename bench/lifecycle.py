"""Lifecycle benchmark: N sandboxes' events through Kafka -> `processor consume` -> PostgreSQL -> relay -> topics.

The emulator (API latency 20 ms, rate limit off, webhooks off) holds the sandboxes; their events are written to
stripe.events the way the ingress writes them (key, headers, `received-at` = now), each sandbox's events
together. Then one `processor consume` process (consumer + relay) works through them:

  phase A (throughput): the whole backlog; events/s, transitions/s, Stripe fetches per event, RSS before/after;
  phase B (latency): more sandboxes offered at a steady rate below capacity; p50/p99 from ingress-accepted
  (`received-at` of the reporting event) to the transition's append to sandbox.transitions.

Baseline in the same run: a plain group consumer reading the same backlog and doing nothing (raw log rate).
The emulator runs in a process of its own on uvloop, so that serving the consumer's fetches does not share a
core with this process's bookkeeping; the CPU that the consumer and the emulator used in phase A is printed, to
tell a consumer-bound figure from an emulator- or machine-bound one.

    .venv/bin/python bench/lifecycle.py                       # own Kafka broker + embedded PostgreSQL
    .venv/bin/python bench/lifecycle.py --sandboxes 2000 --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processor import constants as c  # noqa: E402
from processor.db import migrate  # noqa: E402
from processor.db.embedded import start_embedded_server, stop_embedded_server  # noqa: E402
from processor.dev.emulator.config import EmulatorConfig, Knobs  # noqa: E402
from processor.dev.emulator.runner import RunningEmulator, running_emulator  # noqa: E402
from processor.dev.kafka import KafkaBroker  # noqa: E402
from processor.eventlog.kafka.log import KafkaEventLog  # noqa: E402
from processor.ingress.envelope import parse_envelope  # noqa: E402
from processor.runtime.serving import free_port  # noqa: E402
from processor.settings import Settings  # noqa: E402
from tests.support.lifecycle_harness import PATHS, drive  # noqa: E402

PARAMS = {
    "enable_mcp_access": False,
    "onboarding_link_details": {"refresh_url": "https://p.test/refresh"},
    "prefill": {"email": "user@p.test", "country": "US"},
}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_sandboxes(emu: RunningEmulator, count: int, seed: int) -> list[str]:
    ids = [emu.state.sandboxes.create(dict(PARAMS))[0].id for _ in range(count)]
    drive(emu, ids, seed=seed)
    return ids


def records_for(emu: RunningEmulator, ids: list[str], start_seq: int) -> list[tuple[str, bytes, bytes, str, str]]:
    """(key, body, event id, type, object) per event newer than `start_seq`, each sandbox's events together."""
    wanted = set(ids)
    owner_of: dict[str, str] = {}
    for sid in ids:
        record = emu.state.store.sandboxes[sid]
        owner_of[record.account] = sid
        if record.owner_account:
            owner_of[record.owner_account] = sid
    grouped: dict[str, list[tuple[str, bytes, bytes, str, str]]] = {sid: [] for sid in ids}
    for event in emu.state.store.events:
        if event.seq <= start_seq:
            continue
        body = orjson.dumps(event.v1_payload if event.v1_payload is not None else event.notification())
        envelope = parse_envelope(body)
        sid = (event.related_object or {}).get("id") or owner_of.get(str(event.context))
        if sid in wanted:
            grouped[sid].append((envelope.key, body, envelope.id.encode(), envelope.type, envelope.object))
    return [item for sid in ids for item in grouped[sid]]


Items = list[tuple[str, bytes, bytes, str, str]]


def serve_emulator(pipe: Connection, sandboxes: int, latency_sandboxes: int) -> None:
    """Child process: an emulator on uvloop holding both phases' sandboxes; sends where it is and their events."""
    import uvloop

    async def serve() -> None:
        knobs = Knobs(api_latency_s=0.02, rate_limit_rps=0, delivery_enabled=False)
        async with running_emulator(EmulatorConfig(knobs=knobs)) as emu:
            items_a = records_for(emu, make_sandboxes(emu, sandboxes, seed=1), 0)
            seq = emu.state.store.events[-1].seq
            items_b = records_for(emu, make_sandboxes(emu, latency_sandboxes, seed=2), seq)
            pipe.send((emu.base_url, emu.api_key, items_a, items_b))
            # serve until the parent closes its end of the pipe (or kills us)
            await asyncio.get_running_loop().run_in_executor(None, _wait_closed, pipe)

    uvloop.run(serve())


def _wait_closed(pipe: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        pipe.recv()


async def publish(
    log: KafkaEventLog,
    topic: str,
    items: list[tuple[str, bytes, bytes, str, str]],
    received: dict[str, float],
    rate: float | None = None,
) -> None:
    chunk = 500 if rate is None else max(1, int(rate / 20))
    started = time.perf_counter()
    for index in range(0, len(items), chunk):
        if rate is not None:
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
        now = time.time()
        stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()
        batch = []
        for key, body, event_id, event_type, kind in items[index : index + chunk]:
            received[event_id.decode()] = now
            headers = [
                (c.H_EVENT_ID, event_id),
                (c.H_EVENT_TYPE, event_type.encode()),
                (c.H_OBJECT, kind.encode()),
                (c.H_RECEIVED_AT, stamp),
                (c.H_SECRET_INDEX, b"0"),
            ]
            batch.append((topic, key.encode(), body, headers))
        await log.publish_many(batch)


async def baseline_rate(log: KafkaEventLog, topic: str, total: int) -> float:
    """Records/s of a group consumer that reads the backlog and does nothing with it."""
    consumer = log.consumer(f"bench-baseline-{uuid.uuid4().hex[:6]}", [topic])
    seen = 0
    async with consumer:
        started = None
        first = 0
        while seen < total:
            records = await consumer.poll(2000, 1.0)
            if records and started is None:
                # the clock starts after the first poll, so that poll's records are not counted either
                started, first = time.perf_counter(), len(records)
            seen += len(records)
            if records:
                await consumer.commit({records[-1].tp: records[-1].offset + 1})
        return (seen - first) / (time.perf_counter() - (started or time.perf_counter()))


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def scrape(port: int) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{port}/metrics")).text


async def wait_done(dsn: str, handled: int, timeout_s: float) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = await conn.fetchval("SELECT count(*) FROM processed_events")
            pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            if done >= handled and pending == 0:
                return time.perf_counter()
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise TimeoutError("the consumer did not finish in time")


async def latencies(log: KafkaEventLog, topic: str, received: dict[str, float], since_ms: int) -> list[float]:
    out = []
    for tp, end in (await log.end_offsets(topic)).items():
        for record in await log.read(tp, 0, end):
            if record.timestamp_ms < since_ms:
                continue
            data: dict[str, Any] = orjson.loads(record.value)["data"]
            if data["event_id"] in received:
                out.append(record.timestamp_ms / 1000 - received[data["event_id"]])
    return sorted(out)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    os.chmod(workdir, 0o755)  # noqa: S103 (the embedded PostgreSQL runs unprivileged when we are root)
    broker = None
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        broker = KafkaBroker(workdir / "kafka", heap="1g", quick_start=False).start()  # full JIT, as deployed
        bootstrap = broker.bootstrap
    server_dsn = args.database_url or start_embedded_server(workdir)
    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    dsn = (
        re.sub(r"/[^/?]*(\?|$)", f"/{db_name}\\1", server_dsn, count=1)
        if "/" in server_dsn.split("@")[-1]
        else f"{server_dsn}/{db_name}"
    )
    conn = await asyncpg.connect(dsn)
    await migrate.upgrade(conn)
    await conn.close()
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    topic = f"{prefix}{c.TOPIC_EVENTS}"
    consumer: subprocess.Popen[bytes] | None = None
    parent_pipe, child_pipe = multiprocessing.get_context("spawn").Pipe()
    emulator = multiprocessing.get_context("spawn").Process(
        target=serve_emulator, args=(child_pipe, args.sandboxes, args.latency_sandboxes), daemon=True
    )
    emulator.start()
    try:
        base_url, api_key, items, items_b = await asyncio.get_running_loop().run_in_executor(None, parent_pipe.recv)
        # PROCESSOR_KAFKA_* security settings apply to a secured --bootstrap cluster, as in the consumer it starts
        async with KafkaEventLog([bootstrap], security=Settings.from_env().kafka_security) as log:
            await log.ensure_topics([f"{prefix}{t}" for t in c.ALL_TOPICS])
            handled = sum(
                1
                for item in items
                if item[3].startswith("v2.core.claimable_sandbox.") or item[3].startswith("account.application.")
            )
            received: dict[str, float] = {}
            await publish(log, topic, items, received)
            base = await baseline_rate(log, topic, len(items))
            health = free_port()
            env = {
                **os.environ,
                "PROCESSOR_DATABASE_URL": dsn,
                "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "PROCESSOR_TOPIC_PREFIX": prefix,
                "STRIPE_API_KEY": api_key,
                "STRIPE_API_BASE": base_url,
                "PROCESSOR_STRIPE_MAX_RPS": "100000",
                "PROCESSOR_LOG_LEVEL": "WARNING",
            }
            # the clock starts at the consumer's first processed event, so its start-up is not measured
            consumer = subprocess.Popen(  # noqa: ASYNC220 (one process, started once)
                [
                    sys.executable,
                    "-m",
                    "processor",
                    "consume",
                    "--health-port",
                    str(health),
                    "--batch-size",
                    str(args.batch_size),
                ],
                env=env,
                cwd=ROOT,
            )
            pid = consumer.pid
            await asyncio.sleep(0.5)
            rss_start = rss_mib(pid)
            conn = await asyncpg.connect(dsn)
            while not await conn.fetchval("SELECT count(*) FROM processed_events"):  # noqa: ASYNC110 (polls another process)
                await asyncio.sleep(0.01)
            started = time.perf_counter()
            cpu_consumer, cpu_emulator = cpu_s(pid), cpu_s(emulator.pid or 0)
            # what the first batch (or two) did before the clock started is left out of the rates
            done_at_start = await conn.fetchval("SELECT count(*) FROM processed_events")
            transitions_at_start = await conn.fetchval("SELECT count(*) FROM sandbox_history WHERE kind = 'transition'")
            await conn.close()
            finished = await wait_done(dsn, handled, 900)
            elapsed = finished - started
            cpu_consumer = (cpu_s(pid) - cpu_consumer) / elapsed
            cpu_emulator = (cpu_s(emulator.pid or 0) - cpu_emulator) / elapsed
            text = await scrape(health)
            rss_a = rss_mib(pid)
            transitions = metric(text, "processor_transitions_total")
            fetches = metric(text, "processor_stripe_requests_total")
            events = metric(text, "processor_consumer_events_total")

            # phase B: steady offered load well below capacity, for the latency figure
            handled_b = sum(
                1 for item in items_b if item[3].startswith(("v2.core.claimable_sandbox.", "account.application."))
            )
            since_ms = int(time.time() * 1000)
            await publish(log, topic, items_b, received, rate=args.latency_rate)
            await wait_done(dsn, handled + handled_b, 300)
            lat = await latencies(log, f"{prefix}{c.TOPIC_TRANSITIONS}", received, since_ms)
            rss_end = rss_mib(pid)
            consumer.terminate()
            consumer.wait(30)
            print(
                f"\nlifecycle benchmark: {args.sandboxes} sandboxes ({len(PATHS)} paths round-robin), "
                f"{len(items)} events, emulator API latency 20 ms, rate limit off"
            )
            print(f"  baseline raw log consume rate ..... {base:10.0f} records/s")
            rate = (events - done_at_start) / elapsed
            print(
                f"  consumer events/s ................. {rate:10.0f}  ({events:.0f}, of which"
                f" {events - done_at_start:.0f} in {elapsed:.1f}s)"
            )
            print(
                f"  transitions/s ..................... {(transitions - transitions_at_start) / elapsed:10.0f}"
                f"  ({transitions:.0f})"
            )
            print(f"  Stripe fetches per event .......... {fetches / max(events, 1):10.3f}  ({fetches:.0f})")
            print(
                f"  latency received->published (B) ... p50 {pct(lat, 0.5):.0f} ms, p99 {pct(lat, 0.99):.0f} ms"
                f"  ({len(lat)} transitions, {args.latency_sandboxes} sandboxes at {args.latency_rate:.0f} ev/s)"
            )
            print(
                f"  CPU in phase A (1.0 = one core) ... consumer {cpu_consumer:.2f}, emulator {cpu_emulator:.2f}"
                f" (machine: {os.cpu_count()} cores)"
            )
            print(
                f"  consumer RSS ...................... start {rss_start:.0f} MiB, after A {rss_a:.0f} MiB, "
                f"end {rss_end:.0f} MiB"
            )
    finally:
        parent_pipe.close()
        emulator.join(10)
        if emulator.is_alive():
            emulator.kill()
        if consumer is not None and consumer.poll() is None:
            consumer.kill()
        with contextlib.suppress(Exception):
            await admin.execute(f'DROP DATABASE "{db_name}" WITH (FORCE)')
        await admin.close()
        if broker is not None:
            broker.destroy()
        stop_embedded_server(workdir)  # before its directory goes, or it outlives this process
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandboxes", type=int, default=10_000)
    parser.add_argument("--latency-sandboxes", type=int, default=1_000)
    parser.add_argument("--latency-rate", type=float, default=1_000.0, help="events/s offered in phase B")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--bootstrap", help="an existing Kafka (default: start one)")
    parser.add_argument("--database-url", help="an existing PostgreSQL server (default: embedded)")
    asyncio.run(main(parser.parse_args()))
