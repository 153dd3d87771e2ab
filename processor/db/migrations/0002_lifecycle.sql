-- The lifecycle store: each sandbox's current state, its full history, the events already applied, and the
-- transactional outbox the relay publishes from. The consumer writes all of them in ONE transaction per batch,
-- which is what makes processing exactly once in effect (ARCHITECTURE §6).
CREATE TABLE sandboxes (
    id               text        PRIMARY KEY,
    state            text        NOT NULL,
    -- how many states the sandbox entered: the `sequence` of its latest transition
    sequence         integer     NOT NULL,
    flags            jsonb       NOT NULL DEFAULT '{}',
    -- `created` time (unix ms) of the v1 event that last set the flags, so a late, older one cannot undo it
    flags_as_of_ms   bigint      NOT NULL DEFAULT 0,
    -- observation.stripe_fields() of the last fetch; null before the first fetch
    stripe           jsonb,
    -- the accounts v1 account.application.* events name (copied out of `stripe` to be indexed)
    sandbox_account  text,
    owner_account    text,
    -- increases with every snapshot published on sandbox.state
    version          integer     NOT NULL,
    last_event_id    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sandboxes_sandbox_account ON sandboxes (sandbox_account) WHERE sandbox_account IS NOT NULL;
CREATE INDEX sandboxes_owner_account ON sandboxes (owner_account) WHERE owner_account IS NOT NULL;

-- every step (observed and inferred), stale observation, anomaly, notice and flag change, with its event
CREATE TABLE sandbox_history (
    id           bigserial   PRIMARY KEY,
    sandbox_id   text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('transition', 'stale', 'anomaly', 'notice', 'flag')),
    from_state   text,
    to_state     text,
    observed     boolean,
    sequence     integer,
    event_id     text,
    event_type   text,
    reason       text,
    occurred_at  timestamptz,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sandbox_history_sandbox ON sandbox_history (sandbox_id, id);
-- each state is entered at most once: the database refuses a second transition into it, whatever the code does
CREATE UNIQUE INDEX sandbox_history_entered_once ON sandbox_history (sandbox_id, to_state)
    WHERE kind = 'transition';

-- the idempotency record: an event id here was applied; redeliveries become no-ops
CREATE TABLE processed_events (
    event_id      text        PRIMARY KEY,
    event_type    text        NOT NULL,
    sandbox_id    text,
    outcome       text        NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now()
);

-- lifecycle anomalies (impossible moves); the event itself goes to the DLQ
CREATE TABLE anomalies (
    id              bigserial   PRIMARY KEY,
    sandbox_id      text        NOT NULL,
    event_id        text        NOT NULL,
    current_state   text        NOT NULL,
    observed_state  text        NOT NULL,
    reason          text        NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, sandbox_id)
);

-- messages waiting for the relay; `id` order is the publish order (per key it is also the commit order, since
-- writers of one sandbox hold its lock while inserting)
CREATE TABLE outbox (
    id            bigserial   PRIMARY KEY,
    topic         text        NOT NULL,
    key           bytea,
    value         bytea       NOT NULL,
    headers       jsonb       NOT NULL DEFAULT '{}',
    -- the id downstream deduplicates by: a re-publish after a crash carries the same one
    message_id    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

-- v1 account.application.* events by account: Stripe shows a sandbox's owner account only once the app is
-- installed, so such an event can arrive before we can match it; when a sandbox's account becomes known, the
-- events kept here are applied to it (newest wins, by `created`)
CREATE TABLE account_events (
    event_id    text    PRIMARY KEY,
    account     text    NOT NULL,
    event_type  text    NOT NULL,
    created_ms  bigint  NOT NULL
);
CREATE INDEX account_events_account ON account_events (account);
