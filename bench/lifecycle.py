"""Lifecycle benchmark: N sandboxes' events through Kafka -> `processor consume` -> PostgreSQL -> relay -> topics.

The emulator (API latency 20 ms, rate limit off, webhooks off) holds the sandboxes; their events are written to
stripe.events the way the ingress writes them (key, headers, `received-at` = now), each sandbox's events
together. Then one `processor consume` process (consumer + relay) works through them:

  phase A (throughput): the whole backlog; events/s, transitions/s, Stripe fetches per event, RSS before/after;
  phase B (latency): more sandboxes offered at a steady rate below capacity; p50/p99 from ingress-accepted
  (`received-at` of the reporting event) to the transition's append to sandbox.transitions.

Baseline in the same run: a plain group consumer reading the same backlog and doing nothing (raw log rate).
`--compare TREE` runs the consumer of another source tree (a `git worktree` of main, say) on the same backlog,
broker, emulator and PostgreSQL server, each run on a database and topics of its own; with `--rounds N` the
trees take turns N times and the medians are printed, with the consumer's CPU per event (which depends less on
what else the machine runs than events/s does) and the load average during each run.
The emulator runs in a process of its own on uvloop, so that serving the consumer's fetches does not share a
core with this process's bookkeeping; the CPU that the consumer and the emulator used in phase A is printed, to
tell a consumer-bound figure from an emulator- or machine-bound one.

    .venv/bin/python bench/lifecycle.py                       # own Kafka broker + embedded PostgreSQL
    .venv/bin/python bench/lifecycle.py --sandboxes 2000 --bootstrap 127.0.0.1:9092
    .venv/bin/python bench/lifecycle.py --rounds 3 --compare /tmp/lc-main   # this checkout against main
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
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


@dataclass
class Backlog:
    """What every run consumes: phase A's events (a backlog) and phase B's (offered at a steady rate)."""

    items_a: Items
    items_b: Items
    handled_a: int
    handled_b: int


@dataclass
class RunFigures:
    """One run's figures (of all its consumer processes)."""

    tree: str
    base: float
    rate: float
    events: float
    transitions_rate: float
    transitions: float
    fetches_per_event: float
    cpu_consumer: float
    cpu_emulator: float
    cpu_us_per_event: float
    elapsed: float
    latencies: list[float]
    rss: tuple[float, float, float]
    load: float


def handled_count(items: Items) -> int:
    return sum(1 for item in items if item[3].startswith(("v2.core.claimable_sandbox.", "account.application.")))


async def fresh_database(admin: asyncpg.Connection, server_dsn: str) -> tuple[str, str]:
    """A new database with the schema of this tree: (name, dsn)."""
    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    dsn = (
        re.sub(r"/[^/?]*(\?|$)", f"/{db_name}\\1", server_dsn, count=1)
        if "/" in server_dsn.split("@")[-1]
        else f"{server_dsn}/{db_name}"
    )
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.upgrade(conn)
    finally:
        await conn.close()
    return db_name, dsn


def start_consumer(tree: Path, dsn: str, bootstrap: str, prefix: str, stripe: tuple[str, str], args: argparse.Namespace,
                   health: int, *, relay: bool) -> subprocess.Popen[bytes]:  # fmt: skip
    """`processor consume` of the source tree `tree` (its own `processor` package comes first on the path)."""
    base_url, api_key = stripe
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "PROCESSOR_DATABASE_URL": dsn,
        "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PROCESSOR_TOPIC_PREFIX": prefix,
        "STRIPE_API_KEY": api_key,
        "STRIPE_API_BASE": base_url,
        "PROCESSOR_STRIPE_MAX_RPS": "100000",
        "PROCESSOR_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "processor", "consume", "--health-port", str(health)]
    command += ["--batch-size", str(args.batch_size), *([] if relay else ["--no-relay"])]
    return subprocess.Popen(command, env=env, cwd=tree)


async def count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


async def one_run(
    tree: Path, log: KafkaEventLog, admin: asyncpg.Connection, server_dsn: str, backlog: Backlog,
    stripe: tuple[str, str], emulator_pid: int, args: argparse.Namespace,
) -> RunFigures:  # fmt: skip
    """Phases A and B of the consumers of `tree` on a database and topics of their own."""
    db_name, dsn = await fresh_database(admin, server_dsn)
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    topic = f"{prefix}{c.TOPIC_EVENTS}"
    await log.ensure_topics([f"{prefix}{t}" for t in c.ALL_TOPICS])
    received: dict[str, float] = {}
    await publish(log, topic, backlog.items_a, received)
    base = await baseline_rate(log, topic, len(backlog.items_a))
    ports = [free_port() for _ in range(args.consumers)]
    # one process runs the relay too (as `processor consume` does by default); the others only consume
    consumers = [
        start_consumer(tree, dsn, log.bootstrap, prefix, stripe, args, port, relay=index == 0)
        for index, port in enumerate(ports)
    ]
    try:
        figures = await phase_a(dsn, [p.pid for p in consumers], ports, emulator_pid, backlog)
        # phase B: steady offered load well below capacity, for the latency figure
        since_ms = int(time.time() * 1000)
        await publish(log, topic, backlog.items_b, received, rate=args.latency_rate)
        await wait_done(dsn, backlog.handled_a + backlog.handled_b, 300)
        lat = await latencies(log, f"{prefix}{c.TOPIC_TRANSITIONS}", received, since_ms)
        rss_end = rss_mib(consumers[0].pid)
    finally:
        stop(consumers)
        with contextlib.suppress(Exception):
            await admin.execute(f'DROP DATABASE "{db_name}" WITH (FORCE)')
    return RunFigures(str(tree), base, latencies=lat, rss=(*figures.pop("rss"), rss_end), **figures)


async def phase_a(dsn: str, pids: list[int], ports: list[int], emulator_pid: int, backlog: Backlog) -> dict[str, Any]:
    """The consumers' rates and CPU while they work through the backlog (from their first processed event)."""
    await asyncio.sleep(0.5)
    rss_start = rss_mib(pids[0])
    # the clock starts at the first processed event, so start-up is not measured
    while not await count(dsn, "SELECT count(*) FROM processed_events"):  # noqa: ASYNC110 (polls another process)
        await asyncio.sleep(0.01)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    cpu_consumers, cpu_emulator = sum(map(cpu_s, pids)), cpu_s(emulator_pid)
    # what the first batch (or two) did before the clock started is left out of the rates
    done_at_start = await count(dsn, "SELECT count(*) FROM processed_events")
    transitions_at_start = await count(dsn, "SELECT count(*) FROM sandbox_history WHERE kind = 'transition'")
    elapsed = await wait_done(dsn, backlog.handled_a, 900) - started
    cpu_consumers, cpu_emulator = sum(map(cpu_s, pids)) - cpu_consumers, cpu_s(emulator_pid) - cpu_emulator
    load = (load_start + os.getloadavg()[0]) / 2
    texts = [await scrape(port) for port in ports]
    events = sum(metric(text, "processor_consumer_events_total") for text in texts)
    transitions = sum(metric(text, "processor_transitions_total") for text in texts)
    fetches = sum(metric(text, "processor_stripe_requests_total") for text in texts)
    # distinct events, from the database: with several consumers, a rebalance hands a partition's uncommitted
    # events to another process, which counts them again in its metrics (and, idempotent, changes nothing)
    in_window = await count(dsn, "SELECT count(*) FROM processed_events") - done_at_start
    return {
        "rate": in_window / elapsed,
        "events": events,
        "transitions_rate": (transitions - transitions_at_start) / elapsed,
        "transitions": transitions,
        "fetches_per_event": fetches / max(events, 1),
        "cpu_consumer": cpu_consumers / elapsed,
        "cpu_emulator": cpu_emulator / elapsed,
        "cpu_us_per_event": cpu_consumers / max(in_window, 1) * 1e6,  # a tiny backlog may be done in one batch
        "elapsed": elapsed,
        "rss": (rss_start, rss_mib(pids[0])),
        "load": load,
    }


def report(run: RunFigures, args: argparse.Namespace) -> None:
    print(f"\n{run.tree} (load average {run.load:.1f})")
    print(f"  baseline raw log consume rate ..... {run.base:10.0f} records/s")
    print(
        f"  consumer events/s ................. {run.rate:10.0f}  ({run.events:.0f} handled, redeliveries included,"
        f" {run.elapsed:.1f}s)"
    )
    print(f"  transitions/s ..................... {run.transitions_rate:10.0f}  ({run.transitions:.0f})")
    print(f"  Stripe fetches per event .......... {run.fetches_per_event:10.3f}")
    print(f"  consumer CPU per event ............ {run.cpu_us_per_event:10.0f} us")
    p50, p99 = pct(run.latencies, 0.5), pct(run.latencies, 0.99)
    print(
        f"  latency received->published (B) ... p50 {p50:.0f} ms, p99 {p99:.0f} ms  ({len(run.latencies)} transitions,"
        f" {args.latency_sandboxes} sandboxes at {args.latency_rate:.0f} ev/s)"
    )
    print(
        f"  CPU in phase A (1.0 = one core) ... consumer {run.cpu_consumer:.2f}, emulator {run.cpu_emulator:.2f}"
        f" (machine: {os.cpu_count()} cores)"
    )
    start, after_a, end = run.rss
    print(f"  consumer RSS ...................... start {start:.0f} MiB, after A {after_a:.0f} MiB, end {end:.0f} MiB")


def summary(runs: list[RunFigures], trees: list[Path]) -> None:
    """Medians per tree, and each tree against the first (this checkout) within the same rounds."""
    print(f"\nmedians over {len(runs) // len(trees)} round(s) (trees alternate within each round):")
    medians = {}
    for tree in trees:
        mine = [r for r in runs if r.tree == str(tree)]
        rate, cpu = statistics.median(r.rate for r in mine), statistics.median(r.cpu_us_per_event for r in mine)
        medians[str(tree)] = (rate, cpu)
        print(
            f"  {tree!s:40s} events/s {rate:7.0f}   consumer CPU/event {cpu:6.0f} us"
            f"   per run: {', '.join(f'{r.rate:.0f}/s {r.cpu_us_per_event:.0f} us' for r in mine)}"
            f"   load: {', '.join(f'{r.load:.1f}' for r in mine)}"
        )
    first = medians[str(trees[0])]
    for tree in trees[1:]:
        other = medians[str(tree)]
        print(f"  {trees[0]} / {tree}: events/s x{first[0] / other[0]:.2f}, CPU per event x{first[1] / other[1]:.2f}")


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
    admin = await asyncpg.connect(server_dsn)
    parent_pipe, child_pipe = multiprocessing.get_context("spawn").Pipe()
    emulator = multiprocessing.get_context("spawn").Process(
        target=serve_emulator, args=(child_pipe, args.sandboxes, args.latency_sandboxes), daemon=True
    )
    emulator.start()
    trees = [ROOT, *(tree.resolve() for tree in args.compare)]
    try:
        base_url, api_key, items, items_b = await asyncio.get_running_loop().run_in_executor(None, parent_pipe.recv)
        backlog = Backlog(items, items_b, handled_count(items), handled_count(items_b))
        print(
            f"lifecycle benchmark: {args.sandboxes} sandboxes ({len(PATHS)} paths round-robin), {len(items)} events,"
            f" emulator API latency 20 ms, rate limit off, {args.consumers} consumer process(es)"
        )
        runs: list[RunFigures] = []
        # PROCESSOR_KAFKA_* security settings apply to a secured --bootstrap cluster, as in the consumer it starts
        async with KafkaEventLog([bootstrap], security=Settings.from_env().kafka_security) as log:
            for round_ in range(args.rounds):
                # the order turns each round, so that neither tree always runs first on a warming machine
                for tree in trees[round_ % len(trees) :] + trees[: round_ % len(trees)]:
                    run = await one_run(tree, log, admin, server_dsn, backlog, (base_url, api_key), emulator.pid or 0,
                                        args)  # fmt: skip
                    report(run, args)
                    runs.append(run)
        summary(runs, trees)
    finally:
        parent_pipe.close()
        emulator.join(10)
        if emulator.is_alive():
            emulator.kill()
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
    parser.add_argument(
        "--compare", type=Path, action="append", default=[], metavar="TREE",
        help="also run the consumer of this source tree (e.g. a `git worktree` of main), on the same backlog",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="runs of each tree (medians are printed)")
    parser.add_argument(
        "--consumers", type=int, default=1,
        help="`processor consume` processes sharing the group (the first runs the relay); CPU is their sum",
    )  # fmt: skip
    asyncio.run(main(parser.parse_args()))
