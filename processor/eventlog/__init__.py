"""The event log: one interface, two backends (Kafka, and a table in PostgreSQL for the embedded default)."""

from processor.eventlog.base import EventLog, LogConsumer, Published, Record, TopicPartition
from processor.eventlog.factory import open_event_log

__all__ = ["EventLog", "LogConsumer", "Published", "Record", "TopicPartition", "open_event_log"]
