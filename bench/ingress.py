"""Ingress benchmark: signed Stripe deliveries over real HTTP at increasing concurrency, in one run, against

  (a) the ingress (`processor ingress`) publishing to a real Kafka broker,
  (b) a no-op Starlette endpoint (reads the body, answers 200) on the same uvicorn settings,
  (c) the textbook handler of Stripe's samples: `stripe.Webhook.construct_event`, then a synchronous
      produce-and-wait per request (what a Flask handler with kafka-python's `send(...).get()` does: the
      worker handles nothing else until the broker acknowledged), same uvicorn settings and same producer
      guarantees (idempotent, acks=all).

Load comes from `wrk` (apt install wrk), which cycles through pre-signed requests, so the load generator
costs little CPU next to the servers on a 2-core machine. The three servers run side by side and take turns:
each round runs every target at every level, and the figures are medians over the rounds, because this
shared machine's speed drifts by a quarter within a minute. Prints req/s, p50/p99 and the server's CPU time per
request per target and level, the ratios a/b and a/c at each target's peak against the floors of issue 17, and
p99 of (a) at half of its peak rate. CPU per request barely moves with the machine's load (throughput moves with
whatever else runs on the servers' core), so it is the figure to compare two versions of the ingress by.

`--ceiling` adds (d): the no-op endpoint plus an awaited publish to the stock AIOKafkaProducer, nothing else,
what any ingress on the stock producer can reach on this machine.

`--compare TREE` adds (a0): the ingress of another checkout (say, main in a second worktree) on the same broker
and in the same rounds, so that a change is measured as a0/a in one run window.

    .venv/bin/python bench/ingress.py                 # starts its own Kafka broker (jars from Maven Central)
    .venv/bin/python bench/ingress.py --bootstrap 127.0.0.1:9092 --levels 1,8,32,64 --rounds 5
    .venv/bin/python bench/ingress.py --levels 1,16,64 --rounds 3 --compare /work/wt/main-copy
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import orjson
import psutil

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processor.dev.kafka import KafkaBroker  # noqa: E402
from processor.ingress.signature import sign  # noqa: E402
from processor.runtime.serving import free_port  # noqa: E402

SECRET = "whsec_bench_0123456789abcdef"
PATH = "/webhooks/stripe"
#: distinct pre-signed deliveries wrk cycles through (distinct ids and keys spread over partitions)
DISTINCT = 500
#: issue 17's floors: peak (a) against (b) and (c), and p99 of (a) at half its peak rate
FLOOR_VS_NOOP = 0.6
FLOOR_VS_TEXTBOOK = 10.0
FLOOR_P99_HALF_PEAK_MS = 10.0


# --- the comparison servers (run as `bench/ingress.py serve KIND`) ----------------------------------------------
def noop_app() -> object:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def webhook(request: Request) -> Response:
        await request.body()
        return Response(b'{"received":true}', media_type="application/json")

    return Starlette(routes=[Route(PATH, webhook, methods=["POST"])])


async def started_producer(bootstrap: str) -> AIOKafkaProducer:
    """The stock AIOKafkaProducer with the ingress's guarantees (idempotent, acks=all), started; with the same
    PROCESSOR_KAFKA_* security settings as the processor, for a secured --bootstrap cluster."""
    from aiokafka import AIOKafkaProducer

    from processor.settings import Settings

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                                **Settings.from_env().kafka_security.client_options())
    await producer.start()
    return producer


def textbook_app() -> object:
    """Stripe's sample handler with a synchronous Kafka produce, as in kafka-python `send(...).get()`."""
    import stripe
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    bootstrap, topic = os.environ["BENCH_BOOTSTRAP"], os.environ["BENCH_TOPIC"]
    # a blocking producer, like kafka-python's: its I/O runs on a thread, the handler waits for each ack
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    producer = asyncio.run_coroutine_threadsafe(started_producer(bootstrap), loop).result()

    async def webhook(request: Request) -> Response:
        payload = await request.body()
        try:
            event = stripe.Webhook.construct_event(payload, request.headers.get("stripe-signature"), SECRET)
        except (ValueError, stripe.SignatureVerificationError):
            return Response(status_code=400)
        send = producer.send_and_wait(topic, value=payload, key=event.id.encode())
        asyncio.run_coroutine_threadsafe(send, loop).result(timeout=10)  # synchronous, as in the samples
        return Response(b'{"received":true}', media_type="application/json")

    return Starlette(routes=[Route(PATH, webhook, methods=["POST"])])


def produce_only_app() -> object:
    """(d), with --ceiling: the no-op endpoint plus the one thing the ingress may not skip, publishing the body to
    the stock AIOKafkaProducer (idempotent, acks=all) and awaiting the ack, keyed as the ingress keys it; no
    signature, no limits, no log, no metrics. What any ingress built on the stock producer can reach here."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    bootstrap, topic = os.environ["BENCH_BOOTSTRAP"], os.environ["BENCH_TOPIC"]
    producers: list[AIOKafkaProducer] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        producer = await started_producer(bootstrap)
        producers.append(producer)
        try:
            yield
        finally:
            await producer.stop()

    async def webhook(request: Request) -> Response:
        payload = await request.body()
        key = orjson.loads(payload)["account"].encode()
        await producers[0].send_and_wait(topic, value=payload, key=key)
        return Response(b'{"received":true}', media_type="application/json")

    return Starlette(routes=[Route(PATH, webhook, methods=["POST"])], lifespan=lifespan)


def uvicorn_options(workers: int) -> dict[str, object]:
    """The server settings every target shares (also what `processor ingress` passes)."""
    return {"workers": workers, "lifespan": "on", "log_config": None, "access_log": False}


def serve(kind: str, port: int, workers: int) -> None:
    import uvicorn

    factory = {"noop": "noop_app", "textbook": "textbook_app", "produce": "produce_only_app"}[kind]
    sys.path.insert(0, str(Path(__file__).parent))
    uvicorn.run(f"ingress:{factory}", factory=True, host="127.0.0.1", port=port, **uvicorn_options(workers))


# --- driving ------------------------------------------------------------------------------------------------------
@dataclass
class Result:
    target: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    #: CPU seconds of the server process (all its threads) per request, in microseconds; nan if unknown
    cpu_us: float = float("nan")


def lua_script(directory: Path) -> Path:
    """A wrk script cycling through DISTINCT signed v1 snapshot deliveries (signed now: valid for 300 s)."""
    lines = ["local reqs = {}", "local n = 0", "function init(args)"]
    for _ in range(DISTINCT):
        event_id = f"evt_{uuid.uuid4().hex[:24]}"
        body = orjson.dumps(
            {
                "id": event_id,
                "object": "event",
                "api_version": "2026-04-22.preview",
                "created": int(time.time()),
                "type": "account.application.authorized",
                "account": f"acct_{uuid.uuid4().hex[:16]}",
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
                "data": {"object": {"id": "ca_bench", "object": "application", "name": "Bench App"}},
            }
        ).decode()
        signature = sign(body.encode(), SECRET)
        headers = f'{{["Content-Type"]="application/json",["Stripe-Signature"]="{signature}"}}'
        lines.append(f'  n = n + 1; reqs[n] = wrk.format("POST", "{PATH}", {headers}, [==[{body}]==])')
    lines += [
        "  i = math.random(n)",
        "end",
        "function request() i = i % n + 1; return reqs[i] end",
        "if os.getenv('BENCH_DELAY_MS') then",
        "  local d = tonumber(os.getenv('BENCH_DELAY_MS'))",
        # exponential pauses: the connections' requests add up to Poisson arrivals at the paced rate, where
        # equal pauses kept them in step and every response wave came back as a burst of requests
        "  function delay() return -d * math.log(1 - math.random()) end",
        "end",
    ]
    path = directory / f"deliveries-{uuid.uuid4().hex[:6]}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` (all its threads) and its live children have used so far: with
    `--workers N` uvicorn's parent only supervises, and the workers (its children) serve."""
    process = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)])


def run_wrk(
    target: str,
    url: str,
    connections: int,
    duration: float,
    workdir: Path,
    delay_ms: float | None = None,
    pid: int | None = None,
) -> Result:
    script = lua_script(workdir)
    env = dict(os.environ)
    if delay_ms is not None:
        env["BENCH_DELAY_MS"] = f"{delay_ms:.3f}"
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(round(duration), 1)}s",
        "--latency",
        "-s",
        str(script),
        url + PATH,
    ]
    cpu_before = cpu_seconds(pid) if pid else 0.0
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    cpu_used = cpu_seconds(pid) - cpu_before if pid else float("nan")
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stdout}{done.stderr}")
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    script.unlink()
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return Result(target, connections, rps, p50, p99, errors, cpu_used / max(requests, 1) * 1e6)


#: the mean pause of a paced connection after each response; wrk truncates `delay()` to whole milliseconds,
#: which turned sub-millisecond pauses into 0 or 1 ms (half-peak runs landed at 0.8x to 1.5x their target)
PACING_DELAY_MS = 20


def half_peak_run(name: str, url: str, target_rps: float, duration: float, workdir: Path) -> Result:
    """Hold about `target_rps`: connections that each pause a random time (mean PACING_DELAY_MS) after every
    response, as many as that rate needs, their number calibrated twice against the rate measured."""
    connections = max(1, round(target_rps * PACING_DELAY_MS / 1000))
    for _ in range(2):
        probe = run_wrk(name, url, connections, 3, workdir, delay_ms=PACING_DELAY_MS)
        # each connection cycles in delay + service time: keep that cycle, fix the number of connections
        cycle_ms = connections * 1000 / probe.rps
        connections = max(1, round(target_rps * cycle_ms / 1000))
    return run_wrk(name, url, connections, duration * 2, workdir, delay_ms=PACING_DELAY_MS)


def warm_up_broker(url: str, workdir: Path, *, slice_s: float = 3.0, limit_s: float = 45.0) -> None:
    """Drive the ingress until its throughput stops rising: the broker's JIT compiles its produce path over
    the first tens of seconds, and before that (a) waited up to six times longer per acknowledgement in the
    first round than in the last (bench runs at 01:44 on 2026-12-02: c=1 348 -> 2,339 req/s) while (b) and
    (c) barely changed. A broker in a cluster has long been warm."""
    previous = 0.0
    spent = 0.0
    while spent < limit_s:
        rps = run_wrk("warm-up", url, 64, slice_s, workdir).rps
        spent += slice_s
        print(f"warm-up: a ingress c=64 {rps:9.0f} req/s", flush=True)
        if spent >= 3 * slice_s and rps < previous * 1.05:
            return
        previous = max(previous, rps)


def wait_http(url: str, path: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + path, timeout=1).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def server(
    command: list[str], env: dict[str, str], url: str, probe: str, log: Path, cpus: set[int] | None = None
) -> Iterator[int]:
    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)  # before the server starts any thread, so all of them inherit it

    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=pin
        )
    try:
        wait_http(url, probe)
        yield process.pid  # one worker: the server is this process (uvicorn serves in it)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


async def create_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    from processor.eventlog.kafka.log import KafkaEventLog
    from processor.settings import Settings

    security = Settings.from_env().kafka_security  # PROCESSOR_KAFKA_* security settings, for a secured cluster
    async with KafkaEventLog([bootstrap], default_partitions=partitions, security=security) as log:
        await log.ensure_topics(topics)


def median_result(results: list[Result]) -> Result:
    """The median of each figure over the rounds of one target at one level."""
    first = results[0]
    return Result(
        first.target,
        first.connections,
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
        statistics.median(r.cpu_us for r in results),
    )


def describe(result: Result) -> str:
    return (
        f"{result.target:11} c={result.connections:<4} {result.rps:9.0f} req/s  p50 {result.p50_ms:7.2f} ms"
        f"  p99 {result.p99_ms:7.2f} ms  cpu {result.cpu_us:5.0f} us/req  errors {result.errors}"
    )


def paired_ratios(runs: dict[tuple[str, int], list[Result]], levels: list[int], top: str, bottom: str) -> str:
    """The ratio of two targets' peaks round by round, and its median: the two peaks of a round were measured
    within seconds of each other, so a slow spell of the machine moves both, where medians taken per target
    can pair one target's fast round with the other's slow one."""
    rounds = len(runs[top, levels[0]])
    ratios = [
        max(runs[top, n][r].rps for n in levels) / max(runs[bottom, n][r].rps for n in levels) for r in range(rounds)
    ]
    listed = ", ".join(f"{ratio:.2f}" for ratio in ratios)
    return f"{listed} (median {statistics.median(ratios):.2f}, lowest {min(ratios):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="an existing broker; default: start one")
    parser.add_argument("--levels", default="1,4,16,64,128", help="concurrent connections per stage")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per stage")
    parser.add_argument("--rounds", type=int, default=5, help="times every target runs every level (medians)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of every target")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--log-level", default="INFO", help="the ingress's log level (its logs go to a file)")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="TREE",
        help="also run (a0), the ingress of the checkout TREE (imported from it, this venv), in the same rounds",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also run (d): the no-op endpoint plus an awaited publish to the stock producer, nothing else",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="servers on the last CPU, broker and wrk on the others (default: with one worker and 2+ CPUs)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench: needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    levels = [int(x) for x in args.levels.split(",")]
    cpus = sorted(os.sched_getaffinity(0))
    pin = args.pin if args.pin is not None else (args.workers == 1 and len(cpus) >= 2)
    server_cpus = None
    if pin:
        # The broker stands in for a Kafka cluster on other machines: unpinned, its threads (and wrk) preempted
        # whichever server was under test, and (a) swung between 9k and 15k req/s from round to round while (b)
        # never waits for the broker. Pinned, every server gets the same core to itself, the broker and wrk share
        # the rest. This process pins itself first, so the broker and every wrk it starts inherit that.
        server_cpus = {cpus[-1]}
        os.sched_setaffinity(0, set(cpus[:-1]))
        print(f"pinned: servers on CPU {cpus[-1]}, broker and wrk on CPU {','.join(map(str, cpus[:-1]))}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingress-"))
    broker = None
    try:
        bootstrap = args.bootstrap
        if bootstrap is None:
            broker = KafkaBroker(workdir / "kafka", heap="1g", quick_start=False).start()  # full JIT, as deployed
            bootstrap = broker.bootstrap
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        topics = [f"{prefix}stripe.events", f"{prefix}textbook", f"{prefix}produce"]
        asyncio.run(create_topics(bootstrap, topics, args.partitions))
        base_env = {**os.environ, "PYTHONPATH": str(ROOT)}
        python = sys.executable
        targets = {
            "a ingress": (
                [python, "-m", "processor", "ingress", "--workers", str(args.workers)],
                {
                    "STRIPE_WEBHOOK_SECRETS": SECRET,
                    "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                    "PROCESSOR_TOPIC_PREFIX": prefix,
                    "PROCESSOR_LOG_LEVEL": args.log_level,
                },
                "/readyz",
            ),
            "b noop": ([python, __file__, "serve", "noop", "--workers", str(args.workers)], {}, "/"),
            "c textbook": (
                [python, __file__, "serve", "textbook", "--workers", str(args.workers)],
                {"BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": f"{prefix}textbook"},
                "/",
            ),
        }
        if args.ceiling:
            targets["d produce-only"] = (
                [python, __file__, "serve", "produce", "--workers", str(args.workers)],
                {"BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": f"{prefix}produce"},
                "/",
            )
        if args.compare is not None:
            # the same command and settings as (a), importing `processor` from the other tree (PYTHONPATH wins
            # over this venv's editable install); its own topic, so the two never share a partition's batches
            command, extra, probe = targets["a ingress"]
            a0_extra = {**extra, "PYTHONPATH": str(args.compare.resolve()), "PROCESSOR_TOPIC_PREFIX": f"{prefix}a0."}
            asyncio.run(create_topics(bootstrap, [f"{prefix}a0.stripe.events"], args.partitions))
            targets = {"a0 compare": (command, a0_extra, probe), **targets}
        with contextlib.ExitStack() as servers:
            urls = {}
            pids = {}
            for name, (command, extra, probe) in targets.items():
                port = free_port()
                env = {**base_env, **extra, "PROCESSOR_PORT": str(port)}
                url = urls[name] = f"http://127.0.0.1:{port}"
                log = workdir / f"{name.split()[1]}.log"
                pids[name] = servers.enter_context(
                    server([*command, "--port", str(port)], env, url, probe, log, server_cpus)
                )
                run_wrk(name, url, 8, 2.0, workdir)  # warm-up: connections, metadata
            warm_up_broker(urls["a ingress"], workdir)
            # every round runs every target at every level in turn, so a slow spell of this shared machine
            # lands on all three targets alike instead of on whichever ran during it
            runs: dict[tuple[str, int], list[Result]] = {(name, n): [] for name in targets for n in levels}
            for round_number in range(1, args.rounds + 1):
                for connections in levels:
                    for name, url in urls.items():
                        result = run_wrk(name, url, connections, args.duration, workdir, pid=pids[name])
                        runs[name, connections].append(result)
                        print(f"round {round_number} {describe(result)}", flush=True)
            print(f"\nmedians of {args.rounds} rounds:")
            medians = {key: median_result(results) for key, results in runs.items()}
            for result in medians.values():
                print(describe(result))
            peaks = {name: max((medians[name, n] for n in levels), key=lambda r: r.rps) for name in targets}
            a, b, c = peaks["a ingress"], peaks["b noop"], peaks["c textbook"]
            half = half_peak_run("a ingress", urls["a ingress"], a.rps / 2, args.duration, workdir)
            a0_half = None
            if "a0 compare" in peaks:
                a0_half = half_peak_run("a0 compare", urls["a0 compare"], peaks["a0 compare"].rps / 2, args.duration,
                                        workdir)
        print()
        print(
            f"peak req/s (medians): a={a.rps:.0f} (c={a.connections})  b={b.rps:.0f} (c={b.connections})"
            f"  c={c.rps:.0f} (c={c.connections})"
        )
        print(f"a/b = {a.rps / b.rps:.2f} (floor >= {FLOOR_VS_NOOP})   a/c = {a.rps / c.rps:.1f}"
              f" (floor >= {FLOOR_VS_TEXTBOOK:.0f})")
        print(f"a/b within each round: {paired_ratios(runs, levels, 'a ingress', 'b noop')}")
        print(f"a/c within each round: {paired_ratios(runs, levels, 'a ingress', 'c textbook')}")
        print(f"CPU per request at each peak: a {a.cpu_us:.0f} us, b {b.cpu_us:.0f} us, c {c.cpu_us:.0f} us;"
              f" b/a = {b.cpu_us / a.cpu_us:.2f}")
        print(
            f"a at half peak (target {a.rps / 2:.0f} req/s): {half.rps:.0f} req/s, p50 {half.p50_ms:.2f} ms,"
            f" p99 {half.p99_ms:.2f} ms (floor <= {FLOOR_P99_HALF_PEAK_MS:.0f} ms)"
        )
        if "d produce-only" in peaks:
            d = peaks["d produce-only"]
            print(f"\nd (produce only): peak {d.rps:.0f} req/s (c={d.connections}), d/b = {d.rps / b.rps:.2f},"
                  f" d/c = {d.rps / c.rps:.1f}, a/d = {a.rps / d.rps:.2f}; CPU per request {d.cpu_us:.0f} us")
            print(f"d/b within each round: {paired_ratios(runs, levels, 'd produce-only', 'b noop')}")
        if a0_half is not None:
            a0 = peaks["a0 compare"]
            print(f"\na0 ({args.compare}): peak {a0.rps:.0f} req/s (c={a0.connections}), a/a0 = {a.rps / a0.rps:.2f};"
                  f" a0/b = {a0.rps / b.rps:.2f}, a0/c = {a0.rps / c.rps:.1f}")
            print(f"a/a0 within each round: {paired_ratios(runs, levels, 'a ingress', 'a0 compare')}")
            print(f"CPU per request at each peak: a0 {a0.cpu_us:.0f} us, a {a.cpu_us:.0f} us (a/a0 ="
                  f" {a.cpu_us / a0.cpu_us:.2f})")
            print(f"a0 at half peak (target {a0.rps / 2:.0f} req/s): {a0_half.rps:.0f} req/s,"
                  f" p50 {a0_half.p50_ms:.2f} ms, p99 {a0_half.p99_ms:.2f} ms")
        return 0
    finally:
        if broker is not None:
            broker.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        options = argparse.ArgumentParser()
        options.add_argument("serve")
        options.add_argument("kind", choices=["noop", "textbook", "produce"])
        options.add_argument("--workers", type=int, default=1)
        options.add_argument("--port", type=int, required=True)
        parsed = options.parse_args()
        serve(parsed.kind, parsed.port, parsed.workers)
    else:
        raise SystemExit(main())
