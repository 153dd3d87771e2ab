-- Operator tooling (issue 7): what replay and reconcile remember between runs.

-- DLQ records an operator replayed or purged. Kafka cannot delete single records, so `dlq list` hides the ones
-- listed here; a row is written only after the replayed record is durable on the input topic.
CREATE TABLE dlq_replays (
    topic         text        NOT NULL,
    partition     integer     NOT NULL,
    "offset"      bigint      NOT NULL,
    resolution    text        NOT NULL CHECK (resolution IN ('replayed', 'purged', 'already_processed')),
    run_id        text,
    event_id      text,
    resolved_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);

-- one row per replay run; `start_offsets` are the input topic's end offsets when the run began, so a re-run
-- of an interrupted run finds what it already re-published by reading the topic from there (the log, not a
-- table written after the fact, is the truth: a crash between publish and bookkeeping cannot duplicate)
CREATE TABLE replay_runs (
    run_id         text        PRIMARY KEY,
    source         text        NOT NULL,
    params         jsonb       NOT NULL,
    start_offsets  jsonb       NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    counts         jsonb
);

-- where an interrupted reconcile pass stopped (sandboxes are visited in id order)
CREATE TABLE reconcile_cursors (
    name        text        PRIMARY KEY,
    run_id      text        NOT NULL,
    last_id     text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
