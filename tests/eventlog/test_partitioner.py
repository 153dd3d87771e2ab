"""Our partitioners put a key where Kafka's default partitioner does."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from processor.eventlog.partitioner import choose_partition, partition_for


@given(key=st.binary(min_size=1, max_size=64), count=st.integers(min_value=1, max_value=64))
def test_same_partition_as_kafka_default(key: bytes, count: int) -> None:
    """Both logs' choice of partition agrees with aiokafka's DefaultPartitioner."""
    partitions = list(range(count))
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert choose_partition(key, count) == expected
    assert choose_partition(key, count) == expected  # cached hash, same result
    assert partition_for(key, count) == expected
