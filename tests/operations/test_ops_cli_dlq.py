"""`processor dlq list|show|purge` run as an operator would, on the Kafka and on the PostgreSQL event log."""

from __future__ import annotations

from dataclasses import replace

import asyncpg
import orjson

from processor import constants as c
from processor.consumer.deadletter import dlq_record
from processor.errors import Anomaly, PoisonEvent
from processor.eventlog.base import EventLog, Record, TopicPartition
from processor.eventlog.kafka.log import KafkaEventLog
from processor.eventlog.postgres.log import PostgresEventLog
from processor.settings import Settings
from tests.support.ops_harness import cli, publish_thin_events, read_topic, with_db


async def dead_letter(log: EventLog, settings: Settings) -> list[Record]:
    """Three input events dead-lettered as the consumer does: two poison events, one anomaly."""
    await publish_thin_events(log, settings, ["clmsbx_test_dlq_a", "clmsbx_test_dlq_b", "clmsbx_test_dlq_c"], 1)
    inputs = sorted(await read_topic(log, settings.topic(c.TOPIC_EVENTS)), key=lambda r: r.key or b"")
    errors = [PoisonEvent("malformed payload"), PoisonEvent("malformed payload"), Anomaly("expired after claimed")]
    dlq = settings.topic(c.TOPIC_DLQ)
    await log.publish_many([dlq_record(dlq, r, e, 3) for r, e in zip(inputs, errors, strict=True)])
    dead = await read_topic(log, dlq)
    assert len(dead) == 3
    return dead


def coordinates(stdout: str) -> list[str]:
    return sorted(line.split()[0] for line in stdout.splitlines())


async def resolutions(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM dlq_replays"))
    finally:
        await conn.close()


async def check_dlq_cli(settings: Settings, log: EventLog, dsn: str, *, deletes: bool, ask: bool) -> None:
    """list/show filter and show what was dead-lettered; purge without a terminal to ask on needs --yes; once
    confirmed (--yes, or `ask`: y typed on a terminal) it resolves the matching records: deleted from a
    PostgreSQL log, marked on Kafka; `dlq list` reflects it."""
    dead = await dead_letter(log, settings)
    name = {r.header(c.H_EVENT_ID): f"{r.partition}:{r.offset}" for r in dead}
    anomaly = next(r for r in dead if r.header(c.H_ERROR_CLASS) == "lifecycle_anomaly")
    poison = sorted(f"{r.partition}:{r.offset}" for r in dead if r != anomaly)

    listed = await cli(settings, "dlq", "list")
    assert listed.code == 0, listed.stderr
    assert coordinates(listed.stdout) == sorted(name.values())
    assert "lifecycle_anomaly: expired after claimed" in listed.stdout
    only = await cli(settings, "dlq", "list", "--error-class", "lifecycle_anomaly", "--json")
    page = orjson.loads(only.stdout)  # one JSON document, the page GET /v1/ops/dlq answers
    rows = page["data"]
    assert page["next_cursor"] is None
    assert [(r["event_id"], r["sandbox_id"], r["attempts"]) for r in rows] == [
        (anomaly.header(c.H_EVENT_ID), "clmsbx_test_dlq_c", 3)
    ]
    assert rows[0]["original"]["topic"] == settings.topic(c.TOPIC_EVENTS)

    paged: list[str] = []
    cursor: list[str] = []
    while True:  # a page of one at a time: every record once, in log order
        one = orjson.loads((await cli(settings, "dlq", "list", "--limit", "1", *cursor, "--json")).stdout)
        paged += [r["coordinate"] for r in one["data"]]
        if one["next_cursor"] is None:
            break
        cursor = ["--cursor", one["next_cursor"]]
    assert paged == sorted(name.values(), key=lambda x: tuple(map(int, x.split(":"))))

    shown = await cli(settings, "dlq", "show", f"{anomaly.partition}:{anomaly.offset}")
    assert shown.code == 0, shown.stderr
    detail = orjson.loads(shown.stdout)
    assert detail["body"]["related_object"]["id"] == "clmsbx_test_dlq_c"
    assert detail["headers"][c.H_ERROR_CLASS] == "lifecycle_anomaly" and detail["key"] == "clmsbx_test_dlq_c"
    missing = await cli(settings, "dlq", "show", "0:9999")
    assert missing.code == 1 and "no record at 0:9999" in missing.stderr

    # stdin is not a terminal and there is no --yes: refused, nothing changes
    refused = await cli(settings, "dlq", "purge", "--error-class", "poison_event")
    assert refused.code != 0 and "not confirmed" in refused.stderr
    assert coordinates((await cli(settings, "dlq", "list")).stdout) == sorted(name.values())
    assert await resolutions(dsn) == 0
    assert len(await read_topic(log, settings.topic(c.TOPIC_DLQ))) == 3

    if ask:  # on a terminal the operator is asked: "n" changes nothing, "y" purges
        declined = await cli(settings, "dlq", "purge", "--error-class", "poison_event", answer="n")
        assert declined.code != 0 and "purge 2 dead-lettered event(s)?" in declined.stdout
        assert await resolutions(dsn) == 0
        purged = await cli(settings, "dlq", "purge", "--error-class", "poison_event", answer="y")
        assert purged.stdout.startswith("purge 2 dead-lettered event(s)?")
        purged = replace(purged, stdout=purged.stdout.partition("[y/N] ")[2])
    else:
        purged = await cli(settings, "dlq", "purge", "--error-class", "poison_event", "--yes")
    assert purged.code == 0, purged.stderr
    assert purged.stdout.startswith("purged 2 record(s)")
    assert coordinates((await cli(settings, "dlq", "list")).stdout) == [f"{anomaly.partition}:{anomaly.offset}"]
    everything = await cli(settings, "dlq", "list", "--all")
    remaining = await read_topic(log, settings.topic(c.TOPIC_DLQ))
    if deletes:
        assert remaining == [anomaly]
        assert coordinates(everything.stdout) == [f"{anomaly.partition}:{anomaly.offset}"]
    else:  # Kafka cannot delete one record: it stays, marked
        assert len(remaining) == 3
        assert coordinates(everything.stdout) == sorted(name.values())
        assert sorted(line.split()[0] for line in everything.stdout.splitlines() if "[purged]" in line) == poison
    partition, offset = (int(x) for x in poison[0].split(":"))
    gone = await cli(settings, "dlq", "show", poison[0])
    if deletes:
        assert gone.code == 1
        assert await log.read(TopicPartition(settings.topic(c.TOPIC_DLQ), partition), offset, offset + 1) == []
    else:
        assert orjson.loads(gone.stdout)["resolution"] == "purged"
    nothing = await cli(settings, "dlq", "purge", "--error-class", "poison_event")
    assert (nothing.code, nothing.stdout.strip()) == (0, "nothing to purge")


async def test_dlq_cli_on_kafka(kafka_settings: Settings, kafka_log: KafkaEventLog, pg_dsn: str) -> None:
    """On Kafka: list/show work, purge refuses without confirmation and with --yes marks records resolved."""
    await check_dlq_cli(with_db(kafka_settings, pg_dsn), kafka_log, pg_dsn, deletes=False, ask=False)


async def test_dlq_cli_on_postgres(pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str) -> None:
    """On the PostgreSQL log: list/show work, purge refuses without confirmation, asks on a terminal, deletes."""
    await check_dlq_cli(pg_settings, pg_log, pg_dsn, deletes=True, ask=True)
