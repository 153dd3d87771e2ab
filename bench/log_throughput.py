"""Event-log throughput: produce 100,000 1-KiB records durably, then consume them in a group with commits.

Runs both backends in one process on this machine, next to a baseline measured in the same run:
- Kafka: aiokafka's default producer (acks=1, not idempotent) and a group-less consumer without commits;
- PostgreSQL: a bare COPY of the same rows into an unindexed table, and a bare SELECT of them.
Prints records/s for each and our/baseline ratios, plus the broker start time and peak RSS.

    .venv/bin/python bench/log_throughput.py [--records 100000] [--size 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from processor.db import migrate
from processor.db.embedded import start_embedded_server, stop_embedded_server
from processor.dev.kafka import KafkaBroker
from processor.eventlog.base import EventLog
from processor.eventlog.kafka.log import KafkaEventLog
from processor.eventlog.postgres.log import PostgresEventLog

PARTITIONS = 4
IN_FLIGHT = 2000  # concurrent publish() calls, like many ingress requests at once


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>10,.0f} rec/s ({seconds:6.2f} s)"


async def timed(action: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await action()
    return time.perf_counter() - start


async def produce(log: EventLog, topic: str, records: int, value: bytes) -> None:
    """Concurrent single publishes, each awaited until durable, IN_FLIGHT at a time."""
    semaphore = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with semaphore:
            await log.publish(topic, f"sandbox_{i % 5000}".encode(), value, [("i", str(i).encode())])

    await asyncio.gather(*(one(i) for i in range(records)))


async def consume(log: EventLog, topic: str, records: int) -> None:
    """One group member reading everything, committing after each batch."""
    async with log.consumer(f"bench-{uuid.uuid4().hex[:6]}", [topic]) as consumer:
        seen = 0
        while seen < records:
            batch = await consumer.poll(max_records=2000, timeout_s=2.0)
            offsets = {}
            for record in batch:
                offsets[record.tp] = record.offset + 1
            await consumer.commit(offsets)
            seen += len(batch)


async def bench_kafka(records: int, value: bytes, workdir: Path) -> None:
    broker = KafkaBroker(workdir / "kafka", heap="1g", quick_start=False)  # full JIT, as deployed
    started = time.perf_counter()
    broker.start()
    print(f"kafka     broker start (format + boot + ready)  {time.perf_counter() - started:6.2f} s")
    try:
        async with KafkaEventLog([broker.bootstrap], linger_ms=5) as log:
            ours, base = "bench-ours", "bench-baseline"
            await log.ensure_topics([ours, base], partitions=PARTITIONS)

            async def baseline_produce() -> None:
                producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
                await producer.start()
                try:
                    futures = [await producer.send(base, value, key=f"sandbox_{i % 5000}".encode())
                               for i in range(records)]
                    await asyncio.gather(*futures)
                finally:
                    await producer.stop()

            async def baseline_consume() -> None:
                consumer = AIOKafkaConsumer(base, bootstrap_servers=broker.bootstrap,
                                            auto_offset_reset="earliest", enable_auto_commit=False)
                await consumer.start()
                try:
                    seen = 0
                    while seen < records:
                        batch = await consumer.getmany(timeout_ms=2000, max_records=2000)
                        seen += sum(len(v) for v in batch.values())
                finally:
                    await consumer.stop()

            b_prod = await timed(baseline_produce)
            o_prod = await timed(lambda: produce(log, ours, records, value))
            b_cons = await timed(baseline_consume)
            o_cons = await timed(lambda: consume(log, ours, records))
            report("kafka", records, o_prod, b_prod, o_cons, b_cons,
                   "aiokafka default producer acks=1 / group-less consumer")
    finally:
        broker.destroy()


async def bench_postgres(records: int, value: bytes, workdir: Path) -> None:
    started = time.perf_counter()
    dsn = start_embedded_server(workdir)
    print(f"postgres  embedded server start (initdb + boot)  {time.perf_counter() - started:6.2f} s")
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
    try:
        async with pool.acquire() as conn:
            await migrate.upgrade(conn)
            await conn.execute("CREATE TABLE IF NOT EXISTS bench_baseline (k bytea, v bytea, h text[])")
        async with PostgresEventLog(pool, partitions=PARTITIONS) as log:
            topic = "bench-ours"
            await log.ensure_topics([topic])

            async def baseline_produce() -> None:
                async with pool.acquire() as conn:
                    for start in range(0, records, 2000):
                        rows = [(f"sandbox_{i % 5000}".encode(), value, ["i"])
                                for i in range(start, min(start + 2000, records))]
                        await conn.copy_records_to_table("bench_baseline", records=rows)

            async def baseline_consume() -> None:
                async with pool.acquire() as conn, conn.transaction():
                    cursor = conn.cursor("SELECT k, v, h FROM bench_baseline", prefetch=2000)
                    async for _ in cursor:
                        pass

            b_prod = await timed(baseline_produce)
            o_prod = await timed(lambda: produce(log, topic, records, value))
            b_cons = await timed(baseline_consume)
            o_cons = await timed(lambda: consume(log, topic, records))
            report("postgres", records, o_prod, b_prod, o_cons, b_cons,
                   "bare COPY into an unindexed table / bare cursor SELECT")
    finally:
        await pool.close()


def report(name: str, records: int, o_prod: float, b_prod: float, o_cons: float, b_cons: float,
           baseline: str) -> None:
    print(f"{name:9} produce durably  ours {rate(records, o_prod)}   baseline {rate(records, b_prod)}"
          f"   ours/baseline {b_prod / o_prod:5.2f}")
    print(f"{name:9} consume+commit   ours {rate(records, o_cons)}   baseline {rate(records, b_cons)}"
          f"   ours/baseline {b_cons / o_cons:5.2f}")
    print(f"{name:9} baseline = {baseline}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--backend", choices=["kafka", "postgres", "both"], default="both")
    args = parser.parse_args()
    value = os.urandom(args.size // 2).hex().encode()[: args.size]
    workdir = Path(tempfile.mkdtemp(prefix="bench-log-"))
    os.chmod(workdir, 0o755)  # noqa: S103 the embedded PostgreSQL runs as an unprivileged user when we are root
    print(f"{args.records:,} records of {len(value)} bytes, {PARTITIONS} partitions, {os.cpu_count()} cores")
    try:
        if args.backend in ("kafka", "both"):
            await bench_kafka(args.records, value, workdir)
        if args.backend in ("postgres", "both"):
            await bench_postgres(args.records, value, workdir)
    finally:
        stop_embedded_server(workdir)  # before its directory goes, or it outlives this process
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
