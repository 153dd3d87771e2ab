"""Run as a separate process by the contract tests: consume, commit part of what it read, then wait to be
SIGKILLed mid-batch. Usage: python killable_consumer.py BACKEND ADDRESS TOPIC GROUP COMMIT_COUNT"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from processor.eventlog.kafka.log import KafkaEventLog
from processor.eventlog.postgres.log import PostgresEventLog


async def main(backend: str, address: str, topic: str, group: str, commit_count: int) -> None:
    pool = None
    if backend == "postgres":
        pool = await asyncpg.create_pool(address, min_size=1, max_size=2)
        log: PostgresEventLog | KafkaEventLog = PostgresEventLog(pool, session_timeout_s=2.0)
    else:
        log = KafkaEventLog([address])
    async with log:
        consumer = log.consumer(group, [topic], session_timeout_s=6.0)
        await consumer.start()
        seen = []
        while len(seen) < commit_count:
            seen.extend(await consumer.poll(max_records=commit_count - len(seen), timeout_s=1.0))
        committed = {}
        for record in seen[:commit_count]:
            committed[record.tp] = record.offset + 1
        await consumer.commit(committed)
        # read the rest of the batch but never commit it: the process dies "mid-batch"
        await consumer.poll(max_records=100, timeout_s=0.5)
        print("COMMITTED", ",".join(f"{tp.partition}:{off}" for tp, off in committed.items()), flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    backend, address, topic, group, count = sys.argv[1:6]
    asyncio.run(main(backend, address, topic, group, int(count)))
