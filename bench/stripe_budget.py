"""Stripe's rate limit as the bottleneck: fetches per event, drain time, and the key's budget shared by processes.

The emulator (in this process, 25 requests/s per key, API latency 100 ms, webhooks off) holds the sandboxes;
their events are written to the PostgreSQL event log the way the ingress writes them, and real `processor`
processes consume them. Each part runs twice in the same run, on the same data: `baseline` runs the processes
from a checkout of the code before the budget (`--baseline-tree`, with its own .venv), `budget` from this one.

  realtime  N sandboxes down the lifecycle paths of tests/consumer/lifecycle_harness.py, one step of every
            sandbox at a time, each step's events consumed before the next step happens (no two events of one
            sandbox in one batch): Stripe GETs per event.
  backlog   N sandboxes' events, already all in the log in the order they happened: GETs per event, and the
            drain time against its floor (GETs needed / 25 per second).
  shared    `processor run` (API + its own consumer) and two `processor consume` share the key while a backlog
            of N sandboxes drains; `POST /v1/sandboxes` latency against the same when idle, the busiest second
            the emulator saw, and its 429s.

    .venv/bin/python bench/stripe_budget.py --baseline-tree /path/to/checkout-before
    .venv/bin/python bench/stripe_budget.py --baseline-tree ../base --realtime 500 --backlog 2000 --shared 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processor import constants as c  # noqa: E402
from processor.db import migrate  # noqa: E402
from processor.db.embedded import start_embedded_server  # noqa: E402
from processor.dev.emulator.config import EmulatorConfig, Knobs  # noqa: E402
from processor.dev.emulator.runner import RunningEmulator, running_emulator  # noqa: E402
from processor.eventlog.postgres.log import PostgresEventLog  # noqa: E402
from processor.ingress.envelope import parse_envelope  # noqa: E402
from processor.runtime.serving import free_port  # noqa: E402
from processor.stripe_api.budget import BudgetPlan  # noqa: E402
from tests.support.lifecycle_harness import PATHS, step_actions  # noqa: E402

LIMIT_RPS = 25.0
LATENCY_S = 0.1
PARAMS = {
    "enable_mcp_access": False,
    "onboarding_link_details": {"refresh_url": "https://p.test/refresh"},
    "prefill": {"email": "user@p.test", "country": "US"},
}
TOKEN = "tok_bench_budget_0123456789abcdef"
HANDLED = ("v2.core.claimable_sandbox.", "account.application.")


@dataclass
class Variant:
    name: str
    python: str
    cwd: Path


class Rig:
    """The emulator, one PostgreSQL server, and a fresh database + event log per measured run."""

    def __init__(self, emu: RunningEmulator, server_dsn: str, workdir: Path) -> None:
        self.emu, self.server_dsn, self.workdir = emu, server_dsn, workdir
        self.seq = 0

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[tuple[str, PostgresEventLog, str]]:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(self.server_dsn)
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", self.server_dsn, count=1)
        conn = await asyncpg.connect(dsn)
        await migrate.upgrade(conn)
        await conn.close()
        prefix = f"b{uuid.uuid4().hex[:6]}."
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        log = PostgresEventLog(pool, partitions=4)
        try:
            async with log:
                await log.ensure_topics([f"{prefix}{t}" for t in c.ALL_TOPICS])
                yield dsn, log, prefix
        finally:
            await pool.close()
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.close()

    def env(self, dsn: str, prefix: str, **extra: str) -> dict[str, str]:
        return {
            **os.environ, "PROCESSOR_DATABASE_URL": dsn, "PROCESSOR_TOPIC_PREFIX": prefix,
            "STRIPE_API_KEY": self.emu.api_key, "STRIPE_API_BASE": self.emu.base_url,
            "STRIPE_WEBHOOK_SECRETS": "whsec_bench_" + "0" * 24, "PROCESSOR_STRIPE_MAX_RPS": str(LIMIT_RPS),
            "PROCESSOR_LOG_LEVEL": "WARNING", **extra,
        }  # fmt: skip

    def new_events(self) -> list[tuple[str, bytes, bytes, str, str]]:
        """(key, body, id, type, object) of every event since the last call, in the order they happened."""
        out = []
        for event in self.emu.state.store.events:
            if event.seq <= self.seq:
                continue
            self.seq = event.seq
            body = orjson.dumps(event.v1_payload if event.v1_payload is not None else event.notification())
            envelope = parse_envelope(body)
            out.append((envelope.key, body, envelope.id.encode(), envelope.type, envelope.object))
        return out

    def usage(self) -> dict[str, object]:
        keys = self.emu.state.faults.usage.report()["keys"]
        return keys[0] if keys else {"requests": 0, "by_operation": {}, "rate_limited": 0, "peak_per_second": 0}


async def publish(log: PostgresEventLog, topic: str, items: list[tuple[str, bytes, bytes, str, str]]) -> int:
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()
    for index in range(0, len(items), 500):
        await log.publish_many([
            (topic, key.encode(), body, [(c.H_EVENT_ID, event_id), (c.H_EVENT_TYPE, kind_type.encode()),
                                         (c.H_OBJECT, kind.encode()), (c.H_RECEIVED_AT, stamp),
                                         (c.H_SECRET_INDEX, b"0")])
            for key, body, event_id, kind_type, kind in items[index:index + 500]
        ])  # fmt: skip
    return sum(1 for item in items if item[3].startswith(HANDLED))


async def wait_processed(dsn: str, count: int, ids: list[str] | None = None, timeout_s: float = 3600) -> None:
    """Until `count` events (of `ids`, if given) are processed."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while await _processed(conn, ids) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} events processed after {timeout_s}s")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def _processed(conn: asyncpg.Connection, ids: list[str] | None) -> int:
    if ids is None:
        return int(await conn.fetchval("SELECT count(*) FROM processed_events"))
    return int(await conn.fetchval("SELECT count(*) FROM processed_events WHERE event_id = ANY($1)", ids))


def start(variant: Variant, env: dict[str, str], name: str, logs: Path, *args: str) -> subprocess.Popen[bytes]:
    out = (logs / f"{variant.name}-{name}.log").open("ab")
    return subprocess.Popen([variant.python, "-m", "processor", *args], env=env, cwd=variant.cwd, stdout=out,
                            stderr=subprocess.STDOUT)  # fmt: skip


async def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate the processes and wait for them off the event loop: the emulator runs in this loop, and while
    the processes end they still call it. A blocking wait here froze it; their requests then timed out and
    reached it in one burst once the loop turned again, counted as 429s of the part just measured."""
    await asyncio.to_thread(_terminate_and_wait, procs)


def _terminate_and_wait(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def create_sandboxes(emu: RunningEmulator, count: int) -> list[str]:
    return [emu.state.sandboxes.create(dict(PARAMS))[0].id for _ in range(count)]


def plan(ids: list[str]) -> dict[str, tuple[str, ...]]:
    names = list(PATHS)
    return {sid: PATHS[names[i % len(names)]] for i, sid in enumerate(ids)}


def drive_all(emu: RunningEmulator, ids: list[str]) -> None:
    """Every sandbox down its whole path, steps of different sandboxes interleaved (a backlog's order)."""
    actions, queues = step_actions(emu), {sid: list(steps) for sid, steps in plan(ids).items() if steps}
    import random

    rng = random.Random(7)
    while queues:
        sid = rng.choice(sorted(queues))
        actions[queues[sid].pop(0)](sid)  # type: ignore[operator]
        if not queues[sid]:
            del queues[sid]


async def realtime(rig: Rig, variant: Variant, count: int, logs: Path) -> dict[str, float]:
    async with rig.database() as (dsn, log, prefix):
        topic = f"{prefix}{c.TOPIC_EVENTS}"
        rig.emu.state.faults.usage.reset()
        procs = [start(variant, rig.env(dsn, prefix), "realtime", logs, "consume")]
        try:
            ids = create_sandboxes(rig.emu, count)
            paths, actions = plan(ids), step_actions(rig.emu)
            handled = await publish(log, topic, rig.new_events())
            await wait_processed(dsn, handled)
            for step in range(max(len(p) for p in paths.values())):
                for sid, steps in paths.items():
                    if step < len(steps):
                        actions[steps[step]](sid)  # type: ignore[operator]
                handled += await publish(log, topic, rig.new_events())
                await wait_processed(dsn, handled)
        finally:
            await stop(procs)
    seen = rig.usage()
    gets = seen["by_operation"].get("retrieve_sandbox", 0)  # type: ignore[union-attr]
    return {"events": handled, "gets": gets, "per_event": gets / handled, "429": seen["rate_limited"]}  # type: ignore[dict-item]


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))  # fmt: skip


async def round_trips(urls: list[str]) -> dict[str, float]:
    """Budget queries to PostgreSQL per request let through, summed over the processes (new code only)."""
    trips = taken = 0.0
    async with httpx.AsyncClient() as http:
        for url in urls:
            with contextlib.suppress(httpx.HTTPError):
                text = (await http.get(url)).text
                trips += metric(text, "processor_stripe_budget_round_trips_total")
                taken += metric(text, "processor_stripe_budget_requests_total")
    return {"budget_round_trips_per_request": trips / taken} if taken else {}


async def take_cost(dsn: str, rounds: int = 300) -> dict[str, float]:
    """Median time of one `stripe_budget_take` against a plain `SELECT 1`, on one connection."""
    conn = await asyncpg.connect(dsn)
    try:
        times: dict[str, list[float]] = {"select_1": [], "budget_take": []}
        for _ in range(rounds):
            began = time.perf_counter()
            await conn.fetchval("SELECT 1")
            times["select_1"].append(time.perf_counter() - began)
            began = time.perf_counter()
            await conn.fetchval("SELECT stripe_budget_take('bench', 1e6, 1e6, 0, 30)")
            times["budget_take"].append(time.perf_counter() - began)
    finally:
        await conn.close()
    return {f"{name}_median_ms": statistics.median(values) * 1000 for name, values in times.items()}


async def ready(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(1200):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} never answered 200")


async def backlog(rig: Rig, variant: Variant, items: list[tuple[str, bytes, bytes, str, str]],
                  logs: Path) -> dict[str, float]:
    async with rig.database() as (dsn, log, prefix):
        health = free_port()
        procs = [start(variant, rig.env(dsn, prefix), "backlog", logs, "consume", "--health-port", str(health))]
        try:
            # the clock starts once the consumer is up (start-up is not drain time), before the backlog is
            # written (a few seconds: the consumer is already reading by then)
            await ready(f"http://127.0.0.1:{health}/readyz")
            rig.emu.state.faults.usage.reset()
            started = time.perf_counter()
            drained = asyncio.Event()
            sampler = asyncio.create_task(get_timeline(rig, started, drained))
            handled = await publish(log, f"{prefix}{c.TOPIC_EVENTS}", items)
            await wait_processed(dsn, handled)
            elapsed = time.perf_counter() - started
            drained.set()
            timeline = where_the_time_went(await sampler, elapsed)
            trips = await round_trips([f"http://127.0.0.1:{health}/metrics"])
        finally:
            await stop(procs)
    seen = rig.usage()
    gets = seen["by_operation"].get("retrieve_sandbox", 0)  # type: ignore[union-attr]
    floor = gets / LIMIT_RPS
    # the shared budget spends the key's limit less its headroom for the platform's other calls, by design
    budget_floor = gets / BudgetPlan(LIMIT_RPS).rate  # type: ignore[operator]
    return {"events": handled, "gets": gets, "per_event": gets / handled, "drain_s": elapsed, "floor_s": floor,
            "vs_floor": elapsed / floor if floor else float("nan"),
            "vs_floor_at_budget_rate": elapsed / budget_floor if budget_floor else float("nan"),
            "429": seen["rate_limited"], **timeline, **trips}  # type: ignore[dict-item]


async def get_timeline(rig: Rig, started: float, done: asyncio.Event, every_s: float = 0.25) -> list[tuple[float, int]]:
    """(seconds since `started`, sandbox GETs the emulator answered so far), every `every_s` until `done`."""
    samples: list[tuple[float, int]] = []
    while not done.is_set():
        samples.append((time.perf_counter() - started, rig.usage()["by_operation"].get("retrieve_sandbox", 0)))  # type: ignore[union-attr]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), every_s)
    return samples


def where_the_time_went(samples: list[tuple[float, int]], elapsed: float) -> dict[str, float]:
    """The drain split by the GETs going out: before the first (`head_s`), sampling intervals between the first
    and the last in which none went out (`gaps_s`), after the last (`tail_s`), and the GET rate in between."""
    moving = [(t0, t1) for (t0, g0), (t1, g1) in itertools.pairwise(samples) if g1 > g0]
    if not moving:
        return {}
    first, last = moving[0][0], moving[-1][1]
    busy = sum(t1 - t0 for t0, t1 in moving)
    gets = samples[-1][1]
    return {"head_s": first, "gaps_s": (last - first) - busy, "tail_s": elapsed - last,
            "gets_per_s_fetching": gets / busy if busy else float("nan")}


@dataclass
class Creates:
    """`POST /v1/sandboxes` as a user sees it: seconds each took (failed ones included), and the failed ones."""

    seconds: list[float]
    #: by HTTP status, or by the transport error's name when no answer came
    failed: Counter[int | str]


async def create_latencies(url: str, stop_event: asyncio.Event, tag: str, count: int | None = None) -> Creates:
    """POST /v1/sandboxes about 4 times a second until `stop_event` (or `count`). A failed create (the old code
    answers 503 when Stripe rate-limits it) is counted by status (or transport error), and the next one goes on."""
    out = Creates([], Counter())
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as http:
        while not stop_event.is_set() and (count is None or len(out.seconds) < count):
            began = time.perf_counter()
            try:
                answer = await http.post("/v1/sandboxes", json={"email": "u@p.test", "country": "US"},
                                         headers={"Idempotency-Key": f"{tag}-{len(out.seconds)}"})  # fmt: skip
                status = answer.status_code
            except httpx.TransportError as exc:  # the connection broke (the old code's server under 429s)
                status = type(exc).__name__
            out.seconds.append(time.perf_counter() - began)
            if status not in (200, 201):
                out.failed[status] += 1
            await asyncio.sleep(max(0.0, 0.25 - out.seconds[-1]))
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000


async def shared(rig: Rig, variant: Variant, items: list[tuple[str, bytes, bytes, str, str]], idle_count: int,
                 logs: Path) -> dict[str, object]:
    async with rig.database() as (dsn, log, prefix):
        port = free_port()
        env = rig.env(dsn, prefix, PROCESSOR_PORT=str(port), PROCESSOR_PUBLIC_URL=f"http://127.0.0.1:{port}",
                      PROCESSOR_API_TOKENS=TOKEN, PROCESSOR_SIGNING_KEY="bench-signing-key-0123456789")  # fmt: skip
        run = start(variant, env, "run", logs, "run", "--data-dir", str(rig.workdir / f"run-{variant.name}"))
        procs = [run]
        try:
            url = f"http://127.0.0.1:{port}"
            await ready(f"{url}/healthz")
            idle = await create_latencies(url, asyncio.Event(), f"idle-{variant.name}", idle_count)
            handled = await publish(log, f"{prefix}{c.TOPIC_EVENTS}", items)
            ids = [item[2].decode() for item in items if item[3].startswith(HANDLED)]
            rig.emu.state.faults.usage.reset()
            health = [free_port(), free_port()]
            procs += [start(variant, env, f"consume-{n}", logs, "consume", "--health-port", str(port))
                      for n, port in enumerate(health, 1)]  # fmt: skip
            done = asyncio.Event()
            busy_task = asyncio.create_task(create_latencies(url, done, f"busy-{variant.name}"))
            started = time.perf_counter()
            await wait_processed(dsn, handled, ids)  # the creates add processed events of their own
            elapsed = time.perf_counter() - started
            done.set()
            busy = await busy_task
            trips = await round_trips([f"{url}/metrics", *(f"http://127.0.0.1:{p}/metrics" for p in health)])
        finally:
            await stop(procs)
    seen = rig.usage()
    return {"idle_p99_ms": p99(idle.seconds), "busy_p99_ms": p99(busy.seconds),
            "p99_busy_vs_idle": p99(busy.seconds) / p99(idle.seconds),
            "idle_median_ms": statistics.median(idle.seconds) * 1000,
            "busy_median_ms": statistics.median(busy.seconds) * 1000,
            "creates_idle": len(idle.seconds), "failed_idle": _failures(idle),
            "creates_during_drain": len(busy.seconds), "failed_during_drain": _failures(busy),
            "drain_s": elapsed, "requests": seen["requests"],
            "requests_per_s": seen["requests"] / elapsed,  # type: ignore[operator]
            "busiest_second": seen["peak_per_second"], "limit": LIMIT_RPS, "429": seen["rate_limited"], **trips}


def _failures(creates: Creates) -> str:
    """`0`, or the count and its statuses: `3 (503: 3)`."""
    total = sum(creates.failed.values())
    if not total:
        return "0"
    return f"{total} ({', '.join(f'{status}: {n}' for status, n in sorted(creates.failed.items(), key=str))})"


def show(part: str, results: Mapping[str, Mapping[str, object]]) -> None:
    print(f"\n{part}:")
    for name, figures in results.items():
        text = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        print(f"  {name:9s} {text}")


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-budget-"))
    os.chmod(workdir, 0o755)  # noqa: S103 (the embedded PostgreSQL runs unprivileged when we are root)
    logs = workdir / "logs"
    logs.mkdir()
    server_dsn = args.database_url or start_embedded_server(workdir)
    base = args.baseline_tree
    variants = [Variant("baseline", str(base / ".venv" / "bin" / "python"), base),
                Variant("budget", sys.executable, ROOT)]  # fmt: skip
    knobs = Knobs(api_latency_s=LATENCY_S, rate_limit_rps=LIMIT_RPS, delivery_enabled=False)
    print(f"emulator: {LIMIT_RPS:.0f} req/s per key, API latency {LATENCY_S * 1000:.0f} ms; logs in {logs}")
    async with running_emulator(EmulatorConfig(knobs=knobs, seed=5)) as emu:
        rig = Rig(emu, server_dsn, workdir)
        async with rig.database() as (dsn, _log, _prefix):
            show("cost of the budget (one connection, medians)", {"budget": await take_cost(dsn)})
        if args.realtime:
            show(f"realtime ({args.realtime} sandboxes, one step at a time)",
                 {v.name: await realtime(rig, v, args.realtime, logs) for v in variants})
        if args.backlog:
            ids = create_sandboxes(emu, args.backlog)
            drive_all(emu, ids)
            items = rig.new_events()
            show(f"backlog ({args.backlog} sandboxes, {len(items)} events in the log)",
                 {v.name: await backlog(rig, v, items, logs) for v in variants})
        if args.shared:
            ids = create_sandboxes(emu, args.shared)
            drive_all(emu, ids)
            items = rig.new_events()
            show(f"shared key (run + 2 consume, backlog of {args.shared} sandboxes, {len(items)} events)",
                 {v.name: await shared(rig, v, items, args.idle_creates, logs) for v in variants})
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-tree", required=True, help="checkout of the code before, with its .venv")
    parser.add_argument("--realtime", type=int, default=2000, help="sandboxes in the real-time part (0: skip)")
    parser.add_argument("--backlog", type=int, default=10000, help="sandboxes in the backlog part (0: skip)")
    parser.add_argument("--shared", type=int, default=2000, help="sandboxes in the shared-key part (0: skip)")
    parser.add_argument("--idle-creates", type=int, default=60, help="POST /v1/sandboxes to time when idle")
    parser.add_argument("--database-url", help="a PostgreSQL server to use instead of an embedded one")
    arguments = parser.parse_args()
    arguments.baseline_tree = Path(arguments.baseline_tree).resolve()
    asyncio.run(main(arguments))
