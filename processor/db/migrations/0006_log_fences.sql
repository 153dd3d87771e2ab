-- Fencing on the PostgreSQL log (ARCHITECTURE §6): a role that one process at a time may write as (the outbox
-- relay) holds a generation here. Taking the role bumps it in its own committed transaction; every write as the
-- role locks the row (FOR SHARE) and checks the generation in the same transaction as the insert into
-- log_records, so a writer that lost the role cannot write, and a bump waits for a write already checking.
CREATE TABLE IF NOT EXISTS log_fences (
    role       text PRIMARY KEY,
    generation bigint NOT NULL
);
