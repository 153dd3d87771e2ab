"""The processor on a secured cluster: one real broker with SASL_SSL (SCRAM) and mutual-TLS listeners and ACLs on.

The processor's user may do exactly what processor/eventlog/kafka/acls.py grants the ingress and the lifecycle worker on
topics the platform team created (it may not create topics). Misconfigurations fail with an error that names
what to fix, and the ingress never acknowledges a delivery it could not write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from test_consumer_end_to_end import run_end_to_end

from processor import constants as c
from processor.dev.certs import CertificateAuthority
from processor.dev.kafka import KafkaBroker
from processor.dev.kafka_security import Acl, BrokerSecurity
from processor.eventlog.base import TopicPartition
from processor.eventlog.kafka.acls import Permission, merged
from processor.eventlog.kafka.log import KafkaEventLog
from processor.eventlog.kafka.outage import TRACKER
from processor.ingress.app import build_app
from processor.ingress.signature import sign
from processor.runtime.serving import serving
from processor.settings import Settings

WEBHOOK_SECRET = "whsec_secured_0123456789abcdef"
#: what a deployment of ingress + lifecycle worker needs; no Create: the topics are the platform team's
PROCESS_ROLES = ("ingress", "lifecycle")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One broker with secured listeners for the module; `processor` may use the sasl./mtls. topics, write
    pw./ca. stripe.events and create the tc. topics; `outsider` and `stranger` may see acl.stripe.events
    (Describe) but never write it."""
    workdir = tmp_path_factory.mktemp("secured") / "kafka"
    users = ("processor", "outsider", "stranger")
    broker = KafkaBroker(workdir, security=BrokerSecurity.load_or_create(workdir, users))
    broker.start()
    try:
        broker.grant([
            *Acl.allowing("processor", merged(PROCESS_ROLES, "sasl.")),
            *Acl.allowing("processor", merged(PROCESS_ROLES, "mtls.")),
            *Acl.allowing("processor", merged(("ingress",), "pw.")),
            *Acl.allowing("processor", merged(("ingress",), "ca.")),
            *Acl.allowing("processor", merged(("topics",), "tc.")),
            # a gap like a copy-paste slip leaves: the DLQ's grant, not the input topic's
            *Acl.allowing("outsider", (Permission("topic", f"acl.{c.TOPIC_EVENTS}", ("Describe",)),
                                       Permission("topic", f"acl.{c.TOPIC_DLQ}", ("Write", "Describe")))),
            # may write nowhere: not even a producer id is granted
            *Acl.allowing("stranger", (Permission("topic", f"acl.{c.TOPIC_EVENTS}", ("Describe",)),)),
        ])
        yield broker
    finally:
        broker.destroy()


@pytest_asyncio.fixture(scope="module")
async def platform_topics(secured: KafkaBroker) -> None:
    """The topics, created by the platform team's administrator (the PLAINTEXT listener is a super user)."""
    async with KafkaEventLog([secured.bootstrap]) as admin:
        for prefix in ("sasl.", "mtls.", "acl.", "pw.", "ca."):
            await admin.ensure_topics([f"{prefix}{name}" for name in c.ALL_TOPICS], partitions=2)


def security(broker: KafkaBroker) -> BrokerSecurity:
    assert broker.security is not None
    return broker.security


def scram_env(broker: KafkaBroker, prefix: str, *, user: str = "processor", password: str | None = None,
              cafile: Path | None = None) -> dict[str, str]:
    files = security(broker)
    return {
        "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS": broker.listener("SASL_SSL"),
        "PROCESSOR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PROCESSOR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "PROCESSOR_KAFKA_SASL_USERNAME": user,
        "PROCESSOR_KAFKA_SASL_PASSWORD": password or files.passwords[user],
        "PROCESSOR_KAFKA_SSL_CAFILE": str(cafile or files.ca_file),
        "PROCESSOR_TOPIC_PREFIX": prefix,
        "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "PROCESSOR_PUBLISH_TIMEOUT": "10",
    }


async def end_to_end(broker: KafkaBroker, env: Mapping[str, str], pg_dsn: str) -> None:
    settings = Settings.from_env(env)
    log = KafkaEventLog(settings.kafka_bootstrap_servers, security=settings.kafka_security)
    # the processor's user may not read its own output topics (least privilege): a downstream reader checks them
    async with log, KafkaEventLog([broker.bootstrap]) as downstream:
        metrics = await run_end_to_end(settings, log, pg_dsn, 20, reader=downstream)
    assert (metrics.registry.get_sample_value("processor_consumer_events_total", {"outcome": "applied"}) or 0) > 0


async def test_end_to_end_over_sasl_ssl_with_scram_sha_512(
    secured: KafkaBroker, platform_topics: None, pg_dsn: str
) -> None:
    """Webhooks -> ingress -> consumer -> relay over SASL_SSL (SCRAM-SHA-512, broker certificate and host name
    verified): every sandbox ends in Stripe's state and each transition is published once."""
    await end_to_end(secured, scram_env(secured, "sasl."), pg_dsn)


async def test_end_to_end_over_mutual_tls(secured: KafkaBroker, platform_topics: None, pg_dsn: str) -> None:
    """The same run over SSL with a client certificate (the broker requires one; its CN is the principal)."""
    cert, key = security(secured).client_files("processor")
    env = {
        "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS": secured.listener("SSL"),
        "PROCESSOR_KAFKA_SECURITY_PROTOCOL": "SSL",
        "PROCESSOR_KAFKA_SSL_CAFILE": str(security(secured).ca_file),
        "PROCESSOR_KAFKA_SSL_CERTFILE": str(cert),
        "PROCESSOR_KAFKA_SSL_KEYFILE": str(key),
        "PROCESSOR_TOPIC_PREFIX": "mtls.",
    }
    await end_to_end(secured, env, pg_dsn)


def thin_event(number: int) -> bytes:
    return (b'{"id":"evt_secured_%d","object":"v2.core.event","type":"v2.core.claimable_sandbox.claimed",'
            b'"created":"2026-05-01T12:00:00.000Z","livemode":false,"context":"acct_1",'
            b'"related_object":{"id":"csb_%d","type":"v2.core.claimable_sandbox","url":"/v2/x"}}' % (number, number))


DELIVERIES = [thin_event(n) for n in range(3)]


async def deliver_all(env: Mapping[str, str], bodies: list[bytes], *, wait_ready: bool) -> tuple[list[int], int]:
    """Serve an ingress configured by `env` (it opens its own log), deliver `bodies` (once it is ready, with
    `wait_ready`); return the statuses and the /readyz status after them."""
    settings = Settings.from_env(env)
    async with serving(build_app(settings)) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        if wait_ready:
            async with asyncio.timeout(90):
                while (await client.get("/readyz")).status_code != 200:  # noqa: ASYNC110 - polled over HTTP, as a load balancer does
                    await asyncio.sleep(0.2)
        statuses = []
        for body in bodies:
            headers = {"Stripe-Signature": sign(body, WEBHOOK_SECRET, int(time.time())),
                       "Content-Type": "application/json"}
            response = await client.post("/webhooks/stripe", content=body, headers=headers)
            if response.status_code == 503:
                assert response.headers["Retry-After"]
            statuses.append(response.status_code)
        ready = (await client.get("/readyz")).status_code
    return statuses, ready


async def stored(broker: KafkaBroker, topic: str) -> list[bytes]:
    """The values in `topic`, read by the administrator."""
    async with KafkaEventLog([broker.bootstrap]) as admin:
        ends = await admin.end_offsets(topic)
        values = []
        for tp, end in ends.items():
            values += [r.value for r in await admin.read(TopicPartition(tp.topic, tp.partition), 0, end)]
    return values


async def refused_then_redelivered(broker: KafkaBroker, bad: Mapping[str, str], good: Mapping[str, str],
                                   bodies: list[bytes]) -> None:
    """Every delivery to the misconfigured ingress gets 503 and /readyz is red; nothing reaches the topic. Stripe's
    retries to a correctly configured ingress are all accepted: nothing was lost."""
    statuses, ready = await deliver_all(bad, bodies, wait_ready=False)
    assert statuses == [503] * len(bodies)
    assert ready == 503
    topic = f"{bad['PROCESSOR_TOPIC_PREFIX']}{c.TOPIC_EVENTS}"
    assert await stored(broker, topic) == []
    statuses, ready = await deliver_all(good, bodies, wait_ready=True)
    assert statuses == [200] * len(bodies) and ready == 200
    assert sorted(await stored(broker, topic)) == sorted(bodies)


async def test_wrong_password_is_named_and_no_delivery_is_acknowledged(
    secured: KafkaBroker, platform_topics: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong SASL password: the log says authentication failed and which variables to check; 503, not 200.
    The client's connection errors are not called an outage: the broker is there and refuses it."""
    good = scram_env(secured, "pw.")
    TRACKER.down_since = None  # process-wide: an earlier test's outage is not this one's
    with caplog.at_level(logging.ERROR, logger="processor.ingress"), \
            caplog.at_level(logging.WARNING, logger="processor.eventlog.kafka.outage"):
        await refused_then_redelivered(secured, {**good, "PROCESSOR_KAFKA_SASL_PASSWORD": "not-the-password"},
                                       good, DELIVERIES)
    assert "SASL authentication as 'processor' with SCRAM-SHA-512 failed" in caplog.text
    assert "PROCESSOR_KAFKA_SASL_PASSWORD" in caplog.text
    assert "Kafka refuses this client" in caplog.text and "Kafka is unreachable" not in caplog.text
    assert "not-the-password" not in caplog.text and security(secured).passwords["processor"] not in caplog.text


async def test_untrusted_broker_certificate_is_named_and_no_delivery_is_acknowledged(
    secured: KafkaBroker, platform_topics: None, caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    """A CA file that did not sign the broker's certificate: the log names PROCESSOR_KAFKA_SSL_CAFILE; 503."""
    other_ca = CertificateAuthority("someone else's CA").write(tmp_path)
    good = scram_env(secured, "ca.")
    with caplog.at_level(logging.ERROR, logger="processor.ingress"):
        await refused_then_redelivered(secured, {**good, "PROCESSOR_KAFKA_SSL_CAFILE": str(other_ca)}, good,
                                       DELIVERIES)
    assert "certificate was not accepted" in caplog.text and "PROCESSOR_KAFKA_SSL_CAFILE" in caplog.text


@pytest.mark.parametrize(("user", "connects"), [("outsider", True), ("stranger", False)])
async def test_missing_acl_is_named_and_no_delivery_is_acknowledged(
    secured: KafkaBroker, platform_topics: None, caplog: pytest.LogCaptureFixture, user: str, connects: bool
) -> None:
    """A user without WRITE on stripe.events: with WRITE elsewhere it connects (ready) and the first refused
    write turns /readyz red; with WRITE nowhere it is not even given a producer id. Either way every delivery
    gets 503, /readyz is red, and one log line names the user and where the ACLs are documented."""
    bad = scram_env(secured, "acl.", user=user)
    with caplog.at_level(logging.ERROR):
        statuses, ready = await deliver_all(bad, DELIVERIES, wait_ready=connects)
    assert statuses == [503] * len(DELIVERIES)
    assert ready == 503
    assert await stored(secured, f"acl.{c.TOPIC_EVENTS}") == []
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("processor")]
    named = [m for m in ours if f"as {user})" in m and "deploy/README.md, 'Kafka ACLs'" in m]
    assert len(named) == 1, ours  # once, not once per delivery


def topics_create(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`processor topics create` as an operator runs it, with only `env` configured."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_"))}
    return subprocess.run([sys.executable, "-m", "processor", "topics", "create", "--replication-factor", "1",
                           "--partitions", "1"], env={**clean, **env}, capture_output=True, text=True,
                          timeout=180, check=False)


async def test_topics_create_needs_only_create_on_our_topics(secured: KafkaBroker, platform_topics: None) -> None:
    """A user allowed to create only our four topics creates them; under another prefix it is refused with
    the right it lacks named; on topics the platform team made, a user without DescribeConfigs is told the
    configs were not checked, and that is not a failure."""
    created = await asyncio.to_thread(topics_create, scram_env(secured, "tc."))
    assert created.returncode == 0, created.stdout + created.stderr
    assert [line.split() for line in created.stdout.splitlines()] == [
        ["created", f"tc.{name}"] for name in c.ALL_TOPICS]
    refused = await asyncio.to_thread(topics_create, scram_env(secured, "tx."))
    assert refused.returncode == 1
    assert "not allowed to create it" in refused.stderr and "CREATE" in refused.stderr
    existing = await asyncio.to_thread(topics_create, scram_env(secured, "sasl."))
    assert existing.returncode == 0, existing.stdout + existing.stderr
    assert existing.stdout.count("exists") == 4 and "drift" not in existing.stdout
    assert existing.stdout.count("configs not checked") == 4
