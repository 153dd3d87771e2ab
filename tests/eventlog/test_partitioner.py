"""Our partitioners put a key where Kafka's default partitioner does."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from processor.eventlog.partitioner import cached_default_partitioner, partition_for


@given(key=st.binary(min_size=1, max_size=64), count=st.integers(min_value=1, max_value=64))
def test_same_partition_as_kafka_default(key: bytes, count: int) -> None:
    """The cached partitioner and the embedded log's partition_for agree with aiokafka's DefaultPartitioner."""
    partitions = list(range(count))
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert cached_default_partitioner(key, partitions, partitions) == expected
    assert cached_default_partitioner(key, partitions, partitions) == expected  # cached answer, same result
    assert partition_for(key, count) == expected
