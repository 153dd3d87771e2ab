"""`processor run` and `processor demo` as a user runs them: real processes, real HTTP, embedded default."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from processor.runtime.serving import free_port
from tests.support import schemas


async def start_run(data_dir: Path, port: int) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "processor", "run", "--data-dir", str(data_dir), "--port", str(port),
        "--emulator-port", "0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    assert proc.stdout is not None
    banner = []
    async with asyncio.timeout(90):
        while not banner or "press Ctrl-C" not in banner[-1]:
            line = (await proc.stdout.readline()).decode()
            assert line, "processor run exited early:\n" + "".join(banner)
            banner.append(line)
    text = "".join(banner)
    assert f"http://127.0.0.1:{port}/webhooks/stripe" in text and "embedded" in text
    return proc


async def stop_run(proc: asyncio.subprocess.Process) -> str:
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    rest = (await asyncio.wait_for(proc.stdout.read(), 60)).decode()
    assert await proc.wait() == 0, rest
    return rest


async def test_run_restarts_on_the_same_data_dir_with_state_intact(tmp_path: Path) -> None:
    """A sandbox created and walked before Ctrl-C is there, with its history, after a second `run`."""
    data_dir = tmp_path / "var"
    port = free_port()
    proc = await start_run(data_dir, port)
    try:
        token = json.loads((data_dir / "secrets.json").read_text())["api_token"]
        assert (data_dir / "secrets.json").stat().st_mode & 0o077 == 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers={"Authorization": f"Bearer {token}"}) as api:
            created = await api.post("/v1/sandboxes", headers={"Idempotency-Key": "restart-1"},
                                     json={"email": "a@example.com", "country": "US"})
            assert created.status_code == 201, created.text
            sandbox_id = created.json()["id"]
            before = (await api.get(f"/v1/sandboxes/{sandbox_id}")).json()
            assert before["state"] == "unclaimed"
            assert (await api.get("/healthz")).status_code == 200
    finally:
        output = await stop_run(proc)
    assert "stopped cleanly" in output
    assert token not in output

    proc = await start_run(data_dir, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers={"Authorization": f"Bearer {token}"}) as api:
            after = (await api.get(f"/v1/sandboxes/{sandbox_id}")).json()
    finally:
        await stop_run(proc)
    assert after["state"] == before["state"]
    # later webhooks (the `.created` notice) may add stale observations; nothing recorded is ever lost
    assert after["history"][: len(before["history"])] == before["history"]
    assert [h for h in after["history"] if h["kind"] == "transition"] == [
        h for h in before["history"] if h["kind"] == "transition"]


async def test_demo_ends_in_step_with_the_emulator() -> None:
    """`processor demo` creates, walks and checks sandboxes, and says they all match Stripe."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "processor", "demo", "--sandboxes", "15",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output = (await asyncio.wait_for(proc.communicate(), 180))[0].decode()
    assert proc.returncode == 0, output
    assert "OK: all 15 sandboxes are in the state the emulator (Stripe) says they are in." in output
    assert "duplicates absorbed" in output and "transitions published" in output
    # it leaves the console something to find, and says where and how to sign in
    assert "dead letters to replay: 2 claim(s)" in output, output
    assert "/console/ and sign in with this demo's API token: " in output
    assert time.monotonic() - started < 180


async def test_run_on_kafka_creates_topics_from_the_spec_and_publishes(
    tmp_path: Path, kafka_bootstrap: str, pg_dsn: str
) -> None:
    """With Kafka and an external database configured, `run` creates the topics as
    processor/eventlog/kafka/topics.py says (sandbox.state compacted) and a created sandbox's first transition
    reaches sandbox.transitions."""
    prefix = f"run{os.getpid()}{int(time.time())}."
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_"))}
    env.update(PROCESSOR_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, PROCESSOR_DATABASE_URL=pg_dsn,
               PROCESSOR_TOPIC_PREFIX=prefix)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "processor", "run", "--data-dir", str(tmp_path / "var"), "--port", str(port),
        "--emulator-port", "0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    assert proc.stdout is not None
    banner = ""
    async with asyncio.timeout(90):
        while "press Ctrl-C" not in banner:
            line = (await proc.stdout.readline()).decode()
            assert line, banner
            banner += line
    try:
        assert f"Kafka at {kafka_bootstrap}" in banner
        token = json.loads((tmp_path / "var" / "secrets.json").read_text())["api_token"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers={"Authorization": f"Bearer {token}"}) as api:
            created = await api.post("/v1/sandboxes", headers={"Idempotency-Key": "kafka-1"},
                                     json={"email": "k@example.com", "country": "US"})
            assert created.status_code == 201, created.text
            sandbox_id = created.json()["id"]

        consumer = AIOKafkaConsumer(f"{prefix}sandbox.transitions", bootstrap_servers=kafka_bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), 60)
        finally:
            await consumer.stop()
        event = json.loads(message.value)
        schemas.validate("sandbox-transition", event)
        assert event["id"] == f"{sandbox_id}:unclaimed" and message.key == sandbox_id.encode()

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            described = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, f"{prefix}sandbox.state")])
        finally:
            await admin.close()
        entries = {entry[0]: entry[1] for entry in described[0].resources[0][4]}
        assert entries["cleanup.policy"] == "compact"
    finally:
        await stop_run(proc)


async def test_run_reports_caught_up_through_status_cli_http_and_metrics(tmp_path: Path) -> None:
    """After a sandbox is created on `processor run`, `processor status --data-dir` waits until it is applied and
    published (exit 0) without disturbing the running server; GET /v1/ops/status (bearer only) and /metrics
    say the same; /metrics has the worker's and the process's metrics too, and the log has INFO lines."""
    data_dir = tmp_path / "var"
    port = free_port()
    proc = await start_run(data_dir, port)
    try:
        token = json.loads((data_dir / "secrets.json").read_text())["api_token"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
            created = await api.post("/v1/sandboxes", headers={"Idempotency-Key": "status-1"},
                                     json={"email": "s@example.com", "country": "US"})
            assert created.status_code == 201, created.text
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_"))}
            status = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "processor", "status", "--data-dir", str(data_dir), "--wait-caught-up",
                "--timeout", "60", "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
            out, err = await asyncio.wait_for(status.communicate(), 120)
            assert status.returncode == 0, err.decode()
            report = json.loads(out)
            assert report["caught_up"] and report["backend"] == "postgres" and report["partitions"]
            assert sum(p["end"] for p in report["partitions"]) >= 1  # the sandbox's `.created` webhook

            assert (await api.get(f"/v1/sandboxes/{created.json()['id']}")).status_code == 200  # server still up
            assert (await api.get("/v1/ops/status", headers={"Authorization": "Bearer wrong"})).status_code == 401
            answer = await api.get("/v1/ops/status")
            assert answer.status_code == 200 and answer.json()["caught_up"] is True
            assert answer.json()["partitions"] == report["partitions"]
            metrics = ""
            for _ in range(100):  # the gauges refresh every few seconds
                metrics = (await api.get("/metrics")).text
                if 'processor_consumer_group_lag{partition="0"} 0.0' in metrics:
                    break
                await asyncio.sleep(0.2)
            assert 'processor_consumer_group_lag{partition="0"} 0.0' in metrics
            assert "processor_outbox_pending 0.0" in metrics
            # the ingress's and the worker's metrics on one page, with the process's own
            assert "processor_ingress_request_duration_seconds_count" in metrics
            for worker_metric in ("processor_consumer_lag", "processor_sandboxes_stuck",
                                  "processor_dlq_records_total", "processor_transitions_total"):
                assert f"# TYPE {worker_metric}" in metrics
            assert "process_cpu_seconds_total" in metrics and "process_resident_memory_bytes" in metrics
            assert metrics.count("# TYPE process_cpu_seconds_total") == 1
    finally:
        output = await stop_run(proc)
    # `processor run` logs INFO like every command: a JSON line per webhook delivery, among others
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    deliveries = [r for r in records if r["logger"] == "processor.ingress" and r["msg"] == "webhook delivery"]
    assert deliveries and all(r["level"] == "INFO" and r["status"] == 200 for r in deliveries)
