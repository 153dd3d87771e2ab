"""Our partitioners put a key where Kafka's default partitioner does."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as kafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from processor.eventlog.partitioner import choose_partition, murmur2, partition_for


@given(key=st.binary(min_size=1, max_size=64), count=st.integers(min_value=1, max_value=64))
def test_same_partition_as_kafka_default(key: bytes, count: int) -> None:
    """Both logs' choice of partition agrees with aiokafka's DefaultPartitioner."""
    partitions = list(range(count))
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert choose_partition(key, count) == expected
    assert choose_partition(key, count) == expected  # cached hash, same result
    assert partition_for(key, count) == expected


@given(data=st.binary(max_size=200))
def test_murmur2_equals_aiokafka_for_any_bytes(data: bytes) -> None:
    """Every length (each tail of 0-3 bytes, the empty key) and byte value hashes as aiokafka's murmur2."""
    assert murmur2(data) == kafka_murmur2(data)
