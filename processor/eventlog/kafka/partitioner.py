"""Kafka's default partitioner (aiokafka's murmur2), so a key lands on the same partition number in the embedded
log as in Kafka, and in Kafka as with a Java client, for the same partition count."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from aiokafka.partitioner import DefaultPartitioner, murmur2


@functools.lru_cache(maxsize=65536)
def _positive_hash(key: bytes) -> int:
    # aiokafka's murmur2 is pure Python (~7 us for a sandbox id); a sandbox's events share its key, so the
    # ingress hashes each key once instead of once per delivery
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key (murmur2, positive, modulo)."""
    return _positive_hash(key) % partitions


def kafka_partitioner(key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """aiokafka's `DefaultPartitioner` with the key's hash cached (the `partitioner=` of our producers)."""
    if key is None:
        return int(DefaultPartitioner()(key, all_partitions, available))
    return all_partitions[partition_for(key, len(all_partitions))]
