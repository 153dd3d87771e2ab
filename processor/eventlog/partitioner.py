"""Kafka's default partitioner, so a key lands on the same partition number in the embedded log as it would in
Kafka with the same partition count."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key (murmur2, positive, modulo)."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)
