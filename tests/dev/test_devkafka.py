"""The local Kafka broker tooling: cached jars, clean start, stop and restart on the same ports through the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from processor.dev.kafka import KAFKA_VERSION, default_cache_dir, fetch_jars, new_cluster_id
from processor.errors import LogUnavailable
from processor.eventlog.base import TopicPartition
from processor.eventlog.kafka.log import KafkaEventLog


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROCESSOR_CACHE_DIR": str(default_cache_dir())}
    return subprocess.run([sys.executable, "-m", "processor", *args], capture_output=True, text=True,
                          timeout=180, check=False, env=env, cwd=cwd)


def test_second_fetch_downloads_nothing() -> None:
    """Once the jars are cached, fetching again does not run Maven at all (works with no mvn on PATH)."""
    lib = fetch_jars()
    assert any(p.name.startswith(f"kafka_2.13-{KAFKA_VERSION}") for p in lib.iterdir())
    env = {**os.environ, "PATH": "/nonexistent", "PROCESSOR_CACHE_DIR": str(default_cache_dir())}
    result = subprocess.run([sys.executable, "-m", "processor", "dev", "kafka", "fetch"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == str(lib)


def test_cli_starts_reports_and_stops_a_broker(tmp_path: Path) -> None:
    """`processor dev kafka start|status|stop` runs a real broker and stops it; status tells the truth."""
    workdir = tmp_path / "broker"
    started = run_cli("dev", "kafka", "start", "--dir", str(workdir))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:" in started.stdout
        status = run_cli("dev", "kafka", "status", "--dir", str(workdir))
        assert status.returncode == 0 and "running" in status.stdout
    finally:
        stopped = run_cli("dev", "kafka", "stop", "--dir", str(workdir))
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert run_cli("dev", "kafka", "status", "--dir", str(workdir)).returncode == 3


def test_cluster_ids_never_look_like_options() -> None:
    """Generated KRaft cluster ids are 22 URL-safe characters and never start with '-' (argparse would choke)."""
    ids = {new_cluster_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


async def test_stop_then_start_keeps_ports_and_data_so_clients_reconnect(tmp_path: Path) -> None:
    """`dev kafka stop` then `start` (and `restart`) on one directory keep its address and topics: a producer
    opened before the stop publishes again afterwards without being rebuilt, and nothing written is lost."""
    workdir = tmp_path / "broker"
    started = run_cli("dev", "kafka", "start", "--dir", str(workdir))
    assert started.returncode == 0, started.stdout + started.stderr
    address = started.stdout.split("PROCESSOR_KAFKA_BOOTSTRAP_SERVERS=")[1].split()[0]
    log = KafkaEventLog([address], request_timeout_ms=5000)
    try:
        await log.start()
        await log.ensure_topics(["kept"], partitions=1)
        await log.publish("kept", b"k", b"before")
        assert (await asyncio.to_thread(run_cli, "dev", "kafka", "stop", "--dir", str(workdir))).returncode == 0
        again = await asyncio.to_thread(run_cli, "dev", "kafka", "start", "--dir", str(workdir))
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"PROCESSOR_KAFKA_BOOTSTRAP_SERVERS={address}" in again.stdout
        await publish_until_accepted(log, b"after start")
        restarted = await asyncio.to_thread(run_cli, "dev", "kafka", "restart", "--dir", str(workdir))
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert f"PROCESSOR_KAFKA_BOOTSTRAP_SERVERS={address}" in restarted.stdout
        await publish_until_accepted(log, b"after restart")
        values = [r.value for r in await log.read(TopicPartition("kept", 0), 0, 10)]
    finally:
        await log.stop()
        run_cli("dev", "kafka", "stop", "--dir", str(workdir))
    assert values[0] == b"before" and values[-1] == b"after restart" and b"after start" in values


async def publish_until_accepted(log: KafkaEventLog, value: bytes, timeout_s: float = 90.0) -> None:
    """Publish like the ingress does for a retried delivery: the producer reconnects on its own meanwhile."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                await asyncio.wait_for(log.publish("kept", b"k", value), 10)
                return
            except (LogUnavailable, TimeoutError):
                await asyncio.sleep(0.5)
