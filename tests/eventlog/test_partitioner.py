"""Keys land where Kafka's default partitioner (the Java client's) puts them, on both logs."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from processor.eventlog.base import EventLog
from processor.eventlog.kafka.partitioner import kafka_partitioner, partition_for

#: murmur2 of these UTF-8 keys as org.apache.kafka.common.utils.Utils.murmur2 returns it (a signed Java int),
#: the vectors other Kafka-compatible clients test against
JAVA_MURMUR2 = {"1": -1993445489, "12": 126087238, "123": -267702483, "1234": -1614185708, "12345": -1188365604}


def java_default_partition(key: bytes, partitions: int) -> int:
    """The Java client's choice for a keyed record: Utils.toPositive(Utils.murmur2(key)) % numPartitions."""
    return (JAVA_MURMUR2[key.decode()] & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 12])
def test_partition_equals_the_java_clients_choice(count: int) -> None:
    """For the Java client's own murmur2 vectors, the partition is the one a Java producer picks."""
    for key in JAVA_MURMUR2:
        expected = java_default_partition(key.encode(), count)
        assert partition_for(key.encode(), count) == expected
        assert kafka_partitioner(key.encode(), list(range(count)), []) == expected


@given(key=st.binary(min_size=1, max_size=64), count=st.integers(min_value=1, max_value=64))
def test_cached_choice_equals_aiokafka_default_partitioner(key: bytes, count: int) -> None:
    """The cached hash picks what aiokafka's DefaultPartitioner picks, the first time and every time after."""
    partitions = list(range(count))
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert kafka_partitioner(key, partitions, partitions) == expected
    assert kafka_partitioner(key, partitions, partitions) == expected
    assert partition_for(key, count) == expected


@pytest.fixture(params=["kafka", "postgres"])
def event_log(request: pytest.FixtureRequest) -> EventLog:
    log: EventLog = request.getfixturevalue("kafka_log" if request.param == "kafka" else "pg_log")
    return log


async def test_published_keys_land_on_the_java_clients_partition(event_log: EventLog) -> None:
    """Records published through either log land on the partition a Java producer would have chosen."""
    count = 7
    topic = f"placement-{uuid.uuid4().hex[:8]}"
    await event_log.ensure_topics([topic], partitions=count)
    published = [await event_log.publish(topic, key.encode(), b"v") for key in JAVA_MURMUR2]
    expected = [java_default_partition(key.encode(), count) for key in JAVA_MURMUR2]
    assert [p.partition for p in published] == expected
    assert len(set(expected)) > 1  # the keys spread, so a constant choice would fail
