"""Re-feed events into stripe.events for the consumer to process again; its idempotency makes this safe.

Sources (one module each under `sources/`): the DLQ (optionally filtered), a time window or explicit offsets of
the input topic, every stored event of one sandbox, or Stripe's Events APIs (deliveries Stripe never got
through: v2 events and the v1 account events we handle). Events already applied (in `processed_events`) are
skipped and counted. Every re-published record carries `replay.run-id` and `replay.of` (what it copies); a run
is resumable: a re-run with the same run id first reads the input topic from where the run began and skips
whatever the run already re-published, so an interrupted run finishes without duplicates even when it died
between a publish and its bookkeeping. A DLQ record is marked replayed (hidden from `dlq list`) only after its
copy is durable.

`request` holds what operators ask for and what they get back, `run` the run itself, `copies` the records a run
publishes, `runs` the runs as operators list them.
"""

from processor.operations.replay.request import (
    SOURCES,
    STRIPE_RETENTION,
    OffsetRange,
    ReplayReport,
    ReplayRequest,
    Source,
    parse_offsets,
)
from processor.operations.replay.run import LOCK_SPACE, ReplayInProgress, ReplaysBusy, replay
from processor.operations.replay.runs import ReplayRun, list_replay_runs

__all__ = [
    "LOCK_SPACE",
    "SOURCES",
    "STRIPE_RETENTION",
    "OffsetRange",
    "ReplayInProgress",
    "ReplayReport",
    "ReplayRequest",
    "ReplayRun",
    "ReplaysBusy",
    "Source",
    "list_replay_runs",
    "parse_offsets",
    "replay",
]
