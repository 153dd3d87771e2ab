"""The ingress over real HTTP (uvicorn on 127.0.0.1) against a real Kafka broker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from processor import constants as c
from processor.dev.kafka import KafkaBroker
from processor.eventlog.base import EventLog, Record
from processor.eventlog.kafka.log import KafkaEventLog
from processor.ingress.app import build_app
from processor.ingress.signature import sign
from processor.runtime.httplimits import SWEEP_INTERVAL_S, HttpLimits
from processor.runtime.serving import free_port, serving
from processor.settings import Secret, Settings

SECRETS = ("whsec_current_0123456789abcdef", "whsec_previous_fedcba9876543210")
#: short deadlines keep the fault tests quick; production defaults are 10 s and 5 s
BODY_TIMEOUT_S = 1.0
PUBLISH_TIMEOUT_S = 2.0


def thin_event(sandbox: str = "csb_1", event_type: str = "v2.core.claimable_sandbox.claimed") -> bytes:
    event_id = f"evt_{uuid.uuid4().hex[:16]}"
    return orjson.dumps(
        {
            "id": event_id,
            "object": "v2.core.event",
            "type": event_type,
            "created": "2026-05-01T12:00:00.000Z",
            "livemode": False,
            "related_object": {"id": sandbox, "type": "v2.core.claimable_sandbox", "url": f"/v2/x/{sandbox}"},
            "context": "acct_platform",
        },
        option=orjson.OPT_INDENT_2,  # unusual whitespace: the record must keep the exact bytes
    )


def snapshot_event(account: str = "acct_owner") -> bytes:
    body = {"id": f"evt_{uuid.uuid4().hex[:16]}", "object": "event", "type": "account.application.deauthorized"}
    return orjson.dumps({**body, "account": account, "data": {"object": {"id": "ca_1", "object": "application"}}})


def signed(body: bytes, secret: str = SECRETS[0], offset: int = 0) -> dict[str, str]:
    return {"Stripe-Signature": sign(body, secret, int(time.time()) + offset), "Content-Type": "application/json"}


def ingress_settings(base: Settings, **changes: object) -> Settings:
    secrets = tuple(Secret(s) for s in SECRETS)
    return dataclasses.replace(
        base,
        stripe_webhook_secrets=secrets,
        publish_timeout_s=PUBLISH_TIMEOUT_S,
        **changes,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def ingress(settings: Settings, log: EventLog) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(ingress_settings(settings), log, body_timeout_s=BODY_TIMEOUT_S)
    # the server's body deadline a sweep longer than the app's, as in production (serving.http_limits): it cuts
    # off a body that never starts, the app one that stops halfway
    limits = HttpLimits(body_timeout_s=BODY_TIMEOUT_S + SWEEP_INTERVAL_S)
    async with serving(app, limits=limits) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


async def records(bootstrap: str, topic: str) -> list[Record]:
    """Every record of `topic`, read by consuming it from the beginning to its current end."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[Record] = []
    try:
        async with asyncio.timeout(30):
            while not consumer.assignment():  # noqa: ASYNC110 - aiokafka has no event for its first assignment
                await asyncio.sleep(0.05)
            ends = await consumer.end_offsets(list(consumer.assignment()))
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    found.extend(
                        Record(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers), m.timestamp)
                        for m in messages
                    )
    finally:
        await consumer.stop()
    return found


WEBHOOK = "/webhooks/stripe"


async def test_both_payload_kinds_are_published_raw_with_key_and_headers(
    kafka_settings: Settings, kafka_log: KafkaEventLog
) -> None:
    """A thin and a snapshot event get 200 and land byte-for-byte, keyed and with the §4 headers."""
    thin, snap = thin_event("csb_42"), snapshot_event("acct_owner")
    async with ingress(kafka_settings, kafka_log) as client:
        first = await client.post(WEBHOOK, content=thin, headers=signed(thin, SECRETS[1]))
        second = await client.post(WEBHOOK, content=snap, headers=signed(snap))
    assert (first.status_code, second.status_code) == (200, 200)
    by_value = {r.value: r for r in await records(kafka_log.bootstrap, kafka_settings.topic(c.TOPIC_EVENTS))}
    assert set(by_value) == {thin, snap}
    thin_record, snap_record = by_value[thin], by_value[snap]
    assert (thin_record.key, snap_record.key) == (b"csb_42", b"acct_owner")
    assert thin_record.header(c.H_EVENT_ID) == orjson.loads(thin)["id"]
    assert thin_record.header(c.H_EVENT_TYPE) == "v2.core.claimable_sandbox.claimed"
    assert (thin_record.header(c.H_OBJECT), snap_record.header(c.H_OBJECT)) == ("v2.core.event", "event")
    assert (thin_record.header(c.H_SECRET_INDEX), snap_record.header(c.H_SECRET_INDEX)) == ("1", "0")
    received = thin_record.header(c.H_RECEIVED_AT) or ""
    assert received.endswith("Z") and abs(time.time() - _epoch(received)) < 60


def _epoch(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _tampered(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body.replace(b"csb_1", b"csb_2"), signed(body)


def _only_v0(body: bytes) -> tuple[bytes, dict[str, str]]:
    header = signed(body)
    header["Stripe-Signature"] = header["Stripe-Signature"].replace("v1=", "v0=")
    return body, header


BAD_DELIVERIES: dict[str, tuple[Callable[[bytes], tuple[bytes, dict[str, str]]], str]] = {
    "tampered body": (_tampered, "signature_mismatch"),
    "wrong secret": (lambda b: (b, signed(b, "whsec_someone_else")), "signature_mismatch"),
    "no header": (lambda b: (b, {"Content-Type": "application/json"}), "missing_signature"),
    "only v0": (_only_v0, "no_v1_signature"),
    "malformed header": (lambda b: (b, {"Stripe-Signature": "v1=abc;t=now"}), "malformed_signature"),
    "301 s old": (lambda b: (b, signed(b, offset=-301)), "timestamp_too_old"),
    "301 s ahead": (lambda b: (b, signed(b, offset=301)), "timestamp_in_future"),
    "non-JSON": (lambda b: (b"<xml/>", signed(b"<xml/>")), "invalid_json"),
    "empty body": (lambda b: (b"", signed(b"")), "invalid_json"),
    "JSON without id": (lambda b: (b'{"type":"x"}', signed(b'{"type":"x"}')), "not_an_event"),
}


async def test_bad_deliveries_get_400_with_a_reason_and_publish_nothing(
    kafka_settings: Settings, kafka_log: KafkaEventLog
) -> None:
    """Every kind of bad delivery is answered 400 {"error": reason}, echoes nothing, and is not published."""
    async with ingress(kafka_settings, kafka_log) as client:
        for name, (make, reason) in BAD_DELIVERIES.items():
            body, headers = make(thin_event())
            response = await client.post(WEBHOOK, content=body, headers=headers)
            assert (response.status_code, response.json()) == (400, {"error": reason}), name
            assert not any(s.encode() in response.content for s in SECRETS)
        metrics = (await client.get("/metrics")).text
    assert await records(kafka_log.bootstrap, kafka_settings.topic(c.TOPIC_EVENTS)) == []
    assert 'processor_ingress_deliveries_total{event_type="unknown",outcome="signature_mismatch"} 2.0' in metrics


async def test_oversized_bodies_get_413_declared_or_streamed(
    kafka_settings: Settings, kafka_log: KafkaEventLog
) -> None:
    """A 2 MiB body is refused with 413, whether its Content-Length says so or it arrives chunked."""
    big = b'{"id":"evt_big","type":"x","pad":"' + b"a" * (2 * 1024 * 1024) + b'"}'
    headers = signed(big)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    async with ingress(kafka_settings, kafka_log) as client:
        declared = await client.post(WEBHOOK, content=big, headers=headers)
        streamed = await client.post(WEBHOOK, content=chunks(), headers=headers)
        after = await client.post(WEBHOOK, content=(body := thin_event()), headers=signed(body))
    assert (declared.status_code, declared.json()) == (413, {"error": "body_too_large"})
    assert (streamed.status_code, streamed.json()) == (413, {"error": "body_too_large"})
    assert after.status_code == 200
    assert len(await records(kafka_log.bootstrap, kafka_settings.topic(c.TOPIC_EVENTS))) == 1


async def test_slow_loris_body_is_cut_off_at_the_read_deadline(
    kafka_settings: Settings, kafka_log: KafkaEventLog
) -> None:
    """A client that trickles its body gets 408 at the read deadline and the connection is closed."""
    body = thin_event()
    async with ingress(kafka_settings, kafka_log) as client:
        port = client.base_url.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST {WEBHOOK} HTTP/1.1\r\nHost: x\r\nStripe-Signature: {sign(body, SECRETS[0])}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body[:10])
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), timeout=10)  # read() to EOF: the server must close
        waited = time.monotonic() - started
        writer.close()
        healthy = await client.get("/healthz")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert answer.endswith(b'{"error":"body_timeout"}')
    assert BODY_TIMEOUT_S * 0.9 <= waited < BODY_TIMEOUT_S + 3
    assert healthy.status_code == 200
    assert await records(kafka_log.bootstrap, kafka_settings.topic(c.TOPIC_EVENTS)) == []


async def test_a_head_without_its_body_is_answered_408_at_the_body_deadline(
    kafka_settings: Settings, kafka_log: KafkaEventLog
) -> None:
    """A client that sends a delivery's head and never its body gets 408 at the body deadline, and is closed."""
    body = thin_event()
    async with ingress(kafka_settings, kafka_log) as client:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.base_url.port)
        writer.write((
            f"POST {WEBHOOK} HTTP/1.1\r\nHost: x\r\nStripe-Signature: {sign(body, SECRETS[0])}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode())
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), timeout=10)  # read() to EOF: the server must close
        waited = time.monotonic() - started
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    # the server checks its deadlines once a second
    assert BODY_TIMEOUT_S * 0.9 <= waited < BODY_TIMEOUT_S + SWEEP_INTERVAL_S + 3
    assert await records(kafka_log.bootstrap, kafka_settings.topic(c.TOPIC_EVENTS)) == []


async def test_duplicate_delivery_is_accepted_twice_and_kept_twice(
    kafka_settings: Settings, kafka_log: KafkaEventLog
) -> None:
    """Stripe delivering one event twice gets 200 twice and two records: the consumer dedupes later."""
    body = thin_event()
    async with ingress(kafka_settings, kafka_log) as client:
        answers = [await client.post(WEBHOOK, content=body, headers=signed(body)) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert [r.value for r in await records(kafka_log.bootstrap, kafka_settings.topic(c.TOPIC_EVENTS))] == [body, body]


async def test_health_readiness_and_metrics_endpoints(kafka_settings: Settings, kafka_log: KafkaEventLog) -> None:
    """/healthz and /readyz answer 200 with a connected producer; /metrics counts deliveries and bytes."""
    body = thin_event()
    async with ingress(kafka_settings, kafka_log) as client:
        assert (await client.post(WEBHOOK, content=body, headers=signed(body))).status_code == 200
        health, ready, metrics = [await client.get(p) for p in ("/healthz", "/readyz", "/metrics")]
        # only POST takes the webhook fast path; other methods get the router's answer
        wrong_method = await client.get(WEBHOOK)
        unknown = await client.post("/webhooks/other", content=body, headers=signed(body))
    assert (health.status_code, ready.status_code) == (200, 200)
    assert (wrong_method.status_code, unknown.status_code) == (405, 404)
    text = metrics.text
    assert (
        'processor_ingress_deliveries_total{event_type="v2.core.claimable_sandbox.claimed",outcome="accepted"} 1.0'
        in text
    )
    assert f"processor_ingress_bytes_total {float(len(body))}" in text
    assert "processor_ingress_request_duration_seconds_count 1.0" in text


async def test_broker_outage_answers_503_then_recovers_and_loses_no_acknowledged_delivery(
    private_kafka: KafkaBroker,
) -> None:
    """With the broker stopped the ingress answers 503 + Retry-After; after restart 200; every 200 is in Kafka."""
    settings = Settings(kafka_bootstrap_servers=(private_kafka.bootstrap,), topic_prefix="outage.")
    topic = settings.topic(c.TOPIC_EVENTS)
    log = KafkaEventLog(settings.kafka_bootstrap_servers, request_timeout_ms=3000)
    acknowledged: list[str] = []
    async with log:
        await log.ensure_topics([topic])
        async with ingress(settings, log) as client:

            async def deliver(body: bytes) -> httpx.Response:
                response = await client.post(WEBHOOK, content=body, headers=signed(body))
                if response.status_code == 200:
                    acknowledged.append(orjson.loads(body)["id"])
                return response

            before = [await deliver(thin_event(f"csb_{i}")) for i in range(5)]
            assert [r.status_code for r in before] == [200] * 5

            await asyncio.to_thread(private_kafka.stop)
            refused = [thin_event(f"csb_{i}") for i in range(3)]
            during = [await deliver(body) for body in refused]
            assert [r.status_code for r in during] == [503] * 3
            assert all(r.headers["Retry-After"] == str(c.RETRY_AFTER_SECONDS) for r in during)
            assert {r.json()["error"] for r in during} <= {"publish_timeout", "log_unavailable"}

            await asyncio.to_thread(private_kafka.start)
            # Stripe retries what got 503: redeliver the same bodies until they are accepted
            pending = refused
            deadline = time.monotonic() + 60
            while pending and time.monotonic() < deadline:
                pending = [b for b in pending if (await deliver(b)).status_code != 200]
                await asyncio.sleep(0.5)
            assert pending == []
            assert (await client.get("/readyz")).status_code == 200
        stored = await records(log.bootstrap, topic)
    stored_ids = [r.header(c.H_EVENT_ID) for r in stored]
    assert len(acknowledged) == 8
    assert set(acknowledged) <= set(stored_ids)
    assert len(stored) >= len(acknowledged)


@pytest.fixture
def no_secrets_settings() -> Settings:
    return Settings(kafka_bootstrap_servers=("127.0.0.1:1",))


async def test_app_refuses_to_start_without_a_secret(no_secrets_settings: Settings) -> None:
    """An ingress with no webhook secret configured fails at build time naming the variable."""
    from processor.errors import ConfigError

    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRETS"):
        build_app(no_secrets_settings)


@contextlib.asynccontextmanager
async def cli_ingress(
    kafka_settings: Settings, bootstrap: str, log_path: Path, *options: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, httpx.AsyncClient]]:
    """`processor ingress OPTIONS` in a process of its own, ready; killed at the end if it still runs."""
    import os
    import sys

    port = free_port()
    env = {
        **os.environ,
        "STRIPE_WEBHOOK_SECRETS": ",".join(SECRETS),
        "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PROCESSOR_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "PYTHONPATH": os.getcwd(),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "-m", "processor", "ingress", *options, "--port", str(port)]
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(*command, env=env, stdout=log_file, stderr=log_file)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, f"ingress did not become ready (its log: {log_path})"
                await asyncio.sleep(0.2)
            yield process, client
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_cli_with_one_worker_exports_its_process_metrics(
    kafka_settings: Settings, kafka_log: KafkaEventLog, tmp_path: Path
) -> None:
    """`processor ingress` (one worker) serves the standard process_* and python_* metrics next to its own, once."""
    async with cli_ingress(kafka_settings, kafka_log.bootstrap, tmp_path / "ingress.log") as (_, client):
        event = thin_event()
        assert (await client.post(WEBHOOK, content=event, headers=signed(event))).status_code == 200
        metrics = (await client.get("/metrics")).text
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert metrics.count(f"# TYPE {family} ") == 1, metrics
    assert 'processor_ingress_deliveries_total{event_type="v2.core.claimable_sandbox.claimed",outcome="accepted"} 1.0' \
        in metrics


async def test_cli_serves_with_workers_and_finishes_in_flight_requests_on_sigterm(
    kafka_settings: Settings, kafka_log: KafkaEventLog, tmp_path: Path
) -> None:
    """`processor ingress --workers 2` answers a request that was mid-body when SIGTERM came, then exits 0."""
    import signal

    log_path = tmp_path / "ingress.log"
    async with cli_ingress(kafka_settings, kafka_log.bootstrap, log_path, "--workers", "2") as (process, client):
        port = client.base_url.port
        first = thin_event()
        assert (await client.post(WEBHOOK, content=first, headers=signed(first))).status_code == 200
        more = [thin_event() for _ in range(6)]
        for event in more:  # on fresh connections, so both workers get some
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as fresh:
                assert (await fresh.post(WEBHOOK, content=event, headers=signed(event))).status_code == 200
        # whichever worker answers the scrape reports every worker's deliveries
        for _ in range(3):
            metrics = (await client.get("/metrics")).text
            counted = [line for line in metrics.splitlines() if line.startswith("processor_ingress_deliveries_")]
            assert sum(float(line.rsplit(" ", 1)[1]) for line in counted if "_total{" in line) == 7, metrics
        body = thin_event()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST {WEBHOOK} HTTP/1.1\r\nHost: x\r\nStripe-Signature: {sign(body, SECRETS[0])}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body[:20])
        await writer.drain()
        await asyncio.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        writer.write(body[20:])
        answer = await asyncio.wait_for(reader.read(), timeout=15)
        writer.close()
        exit_code = await asyncio.wait_for(process.wait(), 30)
    output = log_path.read_text()
    assert answer.startswith(b"HTTP/1.1 200 "), output
    assert exit_code == 0, output
    assert "whsec_" not in output
    # one JSON access-log line per delivery, with its event id and outcome
    access = [orjson.loads(line) for line in output.splitlines() if '"webhook delivery"' in line]
    assert {(line["event_id"], line["outcome"], line["status"]) for line in access} == {
        (orjson.loads(event)["id"], "accepted", 200) for event in (first, *more, body)
    }
    stored = await records(kafka_log.bootstrap, kafka_settings.topic(c.TOPIC_EVENTS))
    assert sorted(r.value for r in stored) == sorted([first, *more, body])
