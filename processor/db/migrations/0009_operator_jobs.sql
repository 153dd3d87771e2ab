-- Operator jobs (replays, dry runs, DLQ purges, reconcile passes started over HTTP or in the console), so that
-- any replica behind a load balancer answers for a job another one runs. The running process writes its
-- progress and `heartbeat_at` every few seconds; a `running` row whose heartbeat stopped is a job whose process
-- ended without saying so (processor/operations/jobs.py reports it as interrupted).
CREATE TABLE IF NOT EXISTS operator_jobs (
    id           text PRIMARY KEY,
    kind         text NOT NULL,
    params       jsonb NOT NULL,
    status       text NOT NULL,
    done         bigint NOT NULL DEFAULT 0,
    expected     bigint,
    result       jsonb,
    error        jsonb,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    heartbeat_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS operator_jobs_started_at ON operator_jobs (started_at DESC);
-- At most one reconcile pass runs, over all replicas (a second would work through the same pass's cursor): the
-- database refuses the second claim however close together two replicas ask. A pass whose process died is
-- marked interrupted by the next claim, so it does not hold this forever.
CREATE UNIQUE INDEX IF NOT EXISTS operator_jobs_one_reconcile ON operator_jobs (kind)
    WHERE kind = 'reconcile' AND status = 'running';
