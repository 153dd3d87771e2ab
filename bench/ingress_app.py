"""The ingress app's own CPU per delivery: its ASGI callable driven in-process, without an HTTP server.

bench/ingress.py measures what a client sees, where the HTTP server's work (the same for every target) and the
machine's load blur a change of the app itself. Here `--tasks` tasks call the app directly with pre-signed
deliveries, it publishes to a real Kafka broker, and the process's CPU time per delivery is printed per round.
Each checkout given runs in a process of its own, in turns, so that versions are compared in one run window:

    .venv/bin/python bench/ingress_app.py --bootstrap 127.0.0.1:9092 --trees . /work/wt/main-copy --rounds 3

(start a broker with `processor dev-kafka` or reuse a test broker; --bootstrap is required).
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


async def drive(bootstrap: str, tasks: int, per_round: int, rounds: int) -> list[float]:
    """CPU microseconds per delivery in each round (this process, every thread)."""
    from processor.ingress import jsonlog
    from processor.ingress.app import build_app
    from processor.ingress.signature import sign
    from processor.settings import Settings

    try:
        from processor.eventlog.kafka.log import KafkaEventLog
    except ImportError:  # a checkout from before the layout change
        from processor.eventlog.kafka import KafkaEventLog  # type: ignore[no-redef]

    jsonlog.configure("INFO")  # the ingress command's logging, to stderr (this script sends it to a file)
    settings = Settings.from_env()
    requests = deliveries(sign)
    answers: dict[int, int] = {}

    async with KafkaEventLog([bootstrap]) as log:
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

    figures = uvloop.run(drive(args.bootstrap, args.tasks, args.deliveries, args.rounds))
    print(" ".join(f"{f:.1f}" for f in figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="a running Kafka broker")
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
                    "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS": args.bootstrap,
                    "PROCESSOR_TOPIC_PREFIX": f"benchapp{uuid.uuid4().hex[:6]}.",
                }
                command = [sys.executable, __file__, "--child", *sys.argv[1:]]
                done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=logs, text=True, check=True)
                figures = [float(f) for f in done.stdout.split()]
                results[tree].extend(figures)
                print(f"{tree}: {' '.join(f'{f:6.1f}' for f in figures)} us CPU per delivery", flush=True)
    print()
    for tree, figures in results.items():
        ordered = sorted(figures)
        print(f"{tree}: median {ordered[len(ordered) // 2]:.1f} us CPU per delivery ({len(figures)} rounds)")


if __name__ == "__main__":
    main()
