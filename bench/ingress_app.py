"""The ingress app's own CPU per delivery: its ASGI callable driven in-process, without an HTTP server.

bench/ingress.py measures what a client sees, where the HTTP server's work (the same for every target) and the
machine's load blur a change of the app itself. Here `--tasks` tasks call the app directly with pre-signed
deliveries, it publishes to a real event log (a Kafka broker, or the PostgreSQL-table log), and the process's
CPU time per delivery is printed per round. Each checkout given runs in a process of its own, in turns, so
that versions are compared in one run window:

    .venv/bin/python bench/ingress_app.py --bootstrap 127.0.0.1:9092 --trees . /work/wt/main-copy
    .venv/bin/python bench/ingress_app.py --database-url postgresql://... --trees . /work/wt/main-copy

(one of --bootstrap, a running broker, or --database-url, a PostgreSQL server, is required).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

SECRET = "whsec_bench_0123456789abcdef"
DISTINCT = 500


def deliveries(sign: object) -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
    import orjson

    out = []
    for _ in range(DISTINCT):
        body = orjson.dumps(
            {
                "id": f"evt_{uuid.uuid4().hex[:24]}",
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
        )
        signature = sign(body, SECRET).encode()  # type: ignore[operator]
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        out.append((body, [*headers, (b"stripe-signature", signature)]))
    return out


async def drive(tasks: int, per_round: int, rounds: int) -> list[float]:
    """CPU microseconds per delivery in each round (this process, every thread)."""
    from processor.eventlog.factory import open_event_log
    from processor.ingress.app import build_app
    from processor.ingress.signature import sign
    from processor.runtime import logs
    from processor.settings import Settings

    logs.configure(logs.LogOptions())  # the ingress command's logging, to stderr (this script sends it to a file)
    settings = Settings.from_env()
    requests = deliveries(sign)
    answers: dict[int, int] = {}

    async with open_event_log(settings) as log:  # the ingress's own choice: Kafka if configured, else PostgreSQL
        await log.ensure_topics([settings.topic("stripe.events")])
        app = build_app(settings, log)

        async def deliver(index: int) -> None:
            body, headers = requests[index % DISTINCT]
            scope = {"type": "http", "method": "POST", "path": "/webhooks/stripe", "headers": headers}

            async def receive() -> dict[str, object]:
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: dict[str, object]) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])  # type: ignore[call-overload]
                    answers[status] = answers.get(status, 0) + 1

            await app(scope, receive, send)  # type: ignore[arg-type]

        async def worker(number: int, count: int) -> None:
            for i in range(count):
                await deliver(number * 7919 + i)

        await asyncio.gather(*(worker(w, 100) for w in range(tasks)))  # warm-up: metadata, connections
        figures = []
        for _ in range(rounds):
            started = time.process_time()
            await asyncio.gather(*(worker(w, per_round // tasks) for w in range(tasks)))
            figures.append((time.process_time() - started) / (per_round // tasks * tasks) * 1e6)
    if set(answers) != {200}:
        raise RuntimeError(f"not every delivery was accepted: {answers}")
    return figures


def child(args: argparse.Namespace) -> None:
    import uvloop  # as uvicorn runs the ingress

    figures = uvloop.run(drive(args.tasks, args.deliveries, args.rounds))
    print(" ".join(f"{f:.1f}" for f in figures))


def database(server_url: str) -> str:
    """A fresh database on the server at `server_url` (the table log migrates it when it opens)."""
    import asyncpg

    name = f"benchapp_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()

    asyncio.run(create())
    base, _, query = server_url.partition("?")
    root = base.rsplit("/", 1)[0] if base.count("/") > 2 else base
    return f"{root}/{name}" + (f"?{query}" if query else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    logs = parser.add_mutually_exclusive_group(required=True)
    logs.add_argument("--bootstrap", help="a running Kafka broker")
    logs.add_argument("--database-url", help="a PostgreSQL server for the table log (a database is made per run)")
    parser.add_argument("--trees", nargs="+", type=Path, default=[Path(__file__).resolve().parent.parent])
    parser.add_argument("--tasks", type=int, default=64, help="concurrent deliveries")
    parser.add_argument("--deliveries", type=int, default=6400, help="deliveries per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per process")
    parser.add_argument("--turns", type=int, default=2, help="processes per tree, alternating between trees")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results: dict[Path, list[float]] = {tree: [] for tree in args.trees}
    with tempfile.TemporaryFile("w+") as logs:
        for _ in range(args.turns):
            for tree in args.trees:
                env = {
                    **os.environ,
                    "PYTHONPATH": str(tree.resolve()),  # wins over this venv's editable install
                    "STRIPE_WEBHOOK_SECRETS": SECRET,
                    "PROCESSOR_TOPIC_PREFIX": f"benchapp{uuid.uuid4().hex[:6]}.",
                }
                if args.bootstrap:
                    env["PROCESSOR_KAFKA_BOOTSTRAP_SERVERS"] = args.bootstrap
                else:
                    env.pop("PROCESSOR_KAFKA_BOOTSTRAP_SERVERS", None)
                    env["PROCESSOR_DATABASE_URL"] = database(args.database_url)
                command = [sys.executable, __file__, "--child", *sys.argv[1:]]
                done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=logs, text=True, check=False)
                if done.returncode != 0:
                    logs.seek(0)
                    raise SystemExit(f"{tree} failed:\n{logs.read()[-4000:]}")
                figures = [float(f) for f in done.stdout.split()]
                results[tree].extend(figures)
                print(f"{tree}: {' '.join(f'{f:6.1f}' for f in figures)} us CPU per delivery", flush=True)
    print()
    for tree, figures in results.items():
        ordered = sorted(figures)
        print(f"{tree}: median {ordered[len(ordered) // 2]:.1f} us CPU per delivery ({len(figures)} rounds)")


if __name__ == "__main__":
    main()
