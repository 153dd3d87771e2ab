-- The time (on Stripe's clock: the `Date` of its answer) of the newest fetch whose state the row holds or is
-- past. Events created well before it are already shown by that answer and need no fetch of their own
-- (processor/lifecycle/without_fetch.py). NULL: no fetch with a time applied yet.
ALTER TABLE sandboxes ADD COLUMN IF NOT EXISTS observed_at timestamptz;
