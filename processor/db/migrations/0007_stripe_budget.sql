-- One Stripe rate budget per API key, shared by every process that calls Stripe with it (ARCHITECTURE §8):
-- a token bucket whose level lives here. Each function is one statement for the caller, so taking a token
-- costs one round trip; the row lock serialises takers of one key, and clock_timestamp() read after the lock
-- is one clock for every process, so refills never count the same second twice.
-- UNLOGGED, and committed without waiting for a WAL flush: a level lost in a crash only means the bucket starts
-- full again, while a flushed commit per Stripe request (milliseconds on a busy disk) would cost more than the
-- rest of the budget.
CREATE UNLOGGED TABLE IF NOT EXISTS stripe_budget (
    key         text PRIMARY KEY,             -- a hash of the API key, never the key
    tokens      float8 NOT NULL,
    updated_at  timestamptz NOT NULL,
    -- after a 429 the rate is multiplied by slow_factor, which climbs back to 1 over the recovery time
    slow_factor float8 NOT NULL DEFAULT 1,
    slowed_at   timestamptz
);

-- The row of p_key, locked, created full on first use.
CREATE OR REPLACE FUNCTION stripe_budget_row(p_key text, p_capacity float8) RETURNS stripe_budget
LANGUAGE plpgsql AS $$
DECLARE
    b stripe_budget;
BEGIN
    SELECT * INTO b FROM stripe_budget WHERE key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO stripe_budget (key, tokens, updated_at) VALUES (p_key, p_capacity, clock_timestamp())
            ON CONFLICT (key) DO NOTHING;
        SELECT * INTO b FROM stripe_budget WHERE key = p_key FOR UPDATE;
    END IF;
    RETURN b;
END $$;

-- The rate multiplier at p_now: slow_factor right after a 429, back to 1 after p_recovery_s.
CREATE OR REPLACE FUNCTION stripe_budget_factor(b stripe_budget, p_now timestamptz, p_recovery_s float8)
RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN b.slowed_at IS NULL THEN 1.0
           ELSE least(1.0, b.slow_factor + greatest(0, extract(epoch FROM p_now - b.slowed_at)) / p_recovery_s)
           END
$$;

-- Take one token if at least 1 + p_reserve are there (a lower priority leaves p_reserve to the higher ones).
-- Returns 0 when taken, else the seconds until the bucket holds enough (nothing taken then).
CREATE OR REPLACE FUNCTION stripe_budget_take(
    p_key text, p_rate float8, p_capacity float8, p_reserve float8, p_recovery_s float8
) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
    b stripe_budget := stripe_budget_row(p_key, p_capacity);
    now_ timestamptz := clock_timestamp();
    rate float8 := p_rate * stripe_budget_factor(b, now_, p_recovery_s);
    level float8 := least(p_capacity, b.tokens + greatest(0, extract(epoch FROM now_ - b.updated_at)) * rate);
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF level >= 1 + p_reserve THEN
        UPDATE stripe_budget SET tokens = level - 1, updated_at = now_ WHERE key = p_key;
        RETURN 0;
    END IF;
    RETURN (1 + p_reserve - level) / rate;
END $$;

-- Stripe answered 429 despite the budget: nobody takes a token for p_pause_s, and the rate is halved (at most
-- once per pause: the calls in flight that meet the same wave of 429s are one signal), down to p_min_factor.
-- Returns the new factor.
CREATE OR REPLACE FUNCTION stripe_budget_throttle(
    p_key text, p_rate float8, p_capacity float8, p_pause_s float8, p_min_factor float8, p_recovery_s float8
) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
    b stripe_budget := stripe_budget_row(p_key, p_capacity);
    now_ timestamptz := clock_timestamp();
    factor float8 := stripe_budget_factor(b, now_, p_recovery_s);
    level float8 := least(p_capacity, b.tokens + greatest(0, extract(epoch FROM now_ - b.updated_at)) * p_rate * factor);
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF b.slowed_at IS NULL OR now_ - b.slowed_at > make_interval(secs => p_pause_s) THEN
        factor := greatest(p_min_factor, factor / 2);
    END IF;
    -- a pause of p_pause_s from now, not added to one already running (each 429 of a wave would stack up)
    UPDATE stripe_budget
        SET tokens = least(level, -p_pause_s * p_rate * factor), updated_at = now_,
            slow_factor = factor, slowed_at = now_
        WHERE key = p_key;
    RETURN factor;
END $$;
