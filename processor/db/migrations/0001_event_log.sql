-- The embedded event log: Kafka's model (topics, partitions, offsets, consumer groups) as tables, so the
-- processor runs on one machine with nothing but PostgreSQL.
CREATE TABLE log_partitions (
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    -- offsets are handed out by UPDATE ... RETURNING on this row, which serialises writers per partition and
    -- keeps offsets gap-free (a rolled-back transaction gives its offsets back)
    next_offset  bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, partition)
);

CREATE TABLE log_records (
    topic         text    NOT NULL,
    partition     integer NOT NULL,
    "offset"      bigint  NOT NULL,
    key           bytea,
    value         bytea   NOT NULL,
    header_keys   text[]  NOT NULL DEFAULT '{}',
    header_values bytea[] NOT NULL DEFAULT '{}',
    timestamp_ms  bigint  NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
);
CREATE INDEX log_records_time ON log_records (topic, partition, timestamp_ms);

CREATE TABLE log_group_members (
    group_id      text        NOT NULL,
    member_id     text        NOT NULL,
    topics        text[]      NOT NULL,
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, member_id)
);

-- exclusive ownership of a partition inside a group: the primary key is the lock
CREATE TABLE log_partition_owners (
    group_id   text    NOT NULL,
    topic      text    NOT NULL,
    partition  integer NOT NULL,
    member_id  text    NOT NULL,
    PRIMARY KEY (group_id, topic, partition),
    FOREIGN KEY (group_id, member_id) REFERENCES log_group_members ON DELETE CASCADE
);

CREATE TABLE log_group_offsets (
    group_id   text    NOT NULL,
    topic      text    NOT NULL,
    partition  integer NOT NULL,
    committed  bigint  NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);
