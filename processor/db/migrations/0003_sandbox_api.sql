-- The sandbox API: create requests by idempotency key, and the indexes its list endpoint pages through.

-- one row per (caller, Idempotency-Key): `stripe_key` is the key we derived and sent to Stripe (an HMAC, so it
-- reveals neither the caller's token nor its header); `fingerprint` is a SHA-256 of the request parameters, so
-- the same key with other parameters is refused. The one-time API keys are NOT stored here or anywhere.
CREATE TABLE sandbox_create_requests (
    stripe_key    text        PRIMARY KEY,
    fingerprint   text        NOT NULL,
    sandbox_id    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- when Stripe first answered with the sandbox: its idempotency window (24 h) counts from here
    completed_at  timestamptz
);

-- GET /v1/sandboxes pages newest first by (created_at, id), with or without a state filter
CREATE INDEX sandboxes_created ON sandboxes (created_at DESC, id DESC);
CREATE INDEX sandboxes_state_created ON sandboxes (state, created_at DESC, id DESC);
