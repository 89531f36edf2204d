-- Webhooks of an account: where to POST which application events.
CREATE TABLE webhooks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id uuid NOT NULL,
    url text NOT NULL,
    -- WebSocket event types, or {'*'} for every one
    events text[] NOT NULL,
    active boolean NOT NULL DEFAULT true,
    -- the signing secret, encrypted with WEBHOOKS_SECRET_KEY (Fernet)
    secret_encrypted text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_account_idx ON webhooks (account_id, created_at, id);

-- One row per (webhook, event): the unique key makes a redelivered event a no-op.
-- The row's id is the X-Clarin-Delivery header, the same on every attempt.
CREATE TABLE deliveries (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    account_id uuid NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    -- the exact bytes POSTed (and signed): the event envelope as published
    body text NOT NULL,
    -- pending: waits for next_attempt_at; sending: claimed by a dispatcher until
    -- next_attempt_at (then due again, should that process have died)
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'delivered', 'failed')),
    attempt integer NOT NULL DEFAULT 0,
    status_code integer,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz,
    -- retries stop after this (the retry window from the first scheduling)
    give_up_at timestamptz NOT NULL,
    last_attempt_at timestamptz,
    delivered_at timestamptz,
    CONSTRAINT deliveries_webhook_event_key UNIQUE (webhook_id, event_id)
);
-- the dispatcher's queue: per webhook, due rows first
CREATE INDEX deliveries_due_idx ON deliveries (webhook_id, next_attempt_at)
    WHERE status IN ('pending', 'sending');
-- the log of one webhook, newest first
CREATE INDEX deliveries_webhook_created_idx ON deliveries (webhook_id, created_at DESC, id DESC);
-- pruning of finished rows
CREATE INDEX deliveries_finished_idx ON deliveries (created_at)
    WHERE status IN ('delivered', 'failed');
