-- Issue 21: what operators need to explain every event and every repair.

-- a reconcile pass that moves a sandbox or sets its flag records a 'repair' row beside the step itself: a
-- repair means webhooks were lost, and an operator must see it in the sandbox's history
ALTER TABLE sandbox_history DROP CONSTRAINT sandbox_history_kind_check;
ALTER TABLE sandbox_history ADD CONSTRAINT sandbox_history_kind_check
    CHECK (kind IN ('transition', 'stale', 'anomaly', 'notice', 'flag', 'repair'));

-- event lookups: where did event X go (history rows of every sandbox it touched), and processed events by
-- time (newest first, paged) and by sandbox
CREATE INDEX sandbox_history_event ON sandbox_history (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX processed_events_by_time ON processed_events (processed_at, event_id);
CREATE INDEX processed_events_by_sandbox ON processed_events (sandbox_id, processed_at) WHERE sandbox_id IS NOT NULL;
CREATE INDEX anomalies_event ON anomalies (event_id);
