"""Kafka's default partitioner, so a key lands on the same partition number in the embedded log as it would in
Kafka with the same partition count."""

from __future__ import annotations

import functools
import random

from aiokafka.partitioner import murmur2


@functools.lru_cache(maxsize=65536)
def _positive_hash(key: bytes) -> int:
    # aiokafka's murmur2 is pure Python (~5 us); sandbox ids repeat in every batch, so the hash is cached
    return int(murmur2(key) & 0x7FFFFFFF)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key (murmur2, positive, modulo)."""
    return _positive_hash(key) % partitions


def choose_partition(key: bytes | None, partitions: int) -> int:
    """Kafka's default choice: murmur2 of the key as above, any partition for a record without a key."""
    return random.randrange(partitions) if key is None else partition_for(key, partitions)
