-- Campaigns (broadcasts) and their recipients: one row per lead, the key that
-- makes "at most once per campaign" hold across restarts.
CREATE TABLE campaigns (
    id uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    name text NOT NULL,
    device_id uuid NOT NULL,
    body text NOT NULL,
    status text NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'running', 'paused', 'done', 'cancelled')),
    audience jsonb NOT NULL,
    per_minute integer NOT NULL CHECK (per_minute BETWEEN 1 AND 60),
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    -- counters changed since the last campaign_progress
    progress_dirty boolean NOT NULL DEFAULT false
);
CREATE INDEX campaigns_account_created ON campaigns (account_id, created_at DESC, id DESC);
CREATE INDEX campaigns_running ON campaigns (device_id) WHERE status = 'running';
CREATE INDEX campaigns_dirty ON campaigns (id) WHERE progress_dirty;

CREATE TABLE recipients (
    campaign_id uuid NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    lead_id uuid NOT NULL,
    account_id uuid NOT NULL,
    position integer NOT NULL,
    name text NOT NULL,
    phone text,
    status text NOT NULL
        CHECK (status IN ('waiting', 'sending', 'queued', 'sent', 'delivered', 'read',
                          'failed', 'skipped', 'cancelled')),
    message_id uuid,
    error text,
    handed_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, lead_id)
);
CREATE UNIQUE INDEX recipients_message ON recipients (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX recipients_next ON recipients (campaign_id, position)
    WHERE status IN ('waiting', 'sending');
CREATE INDEX recipients_by_status ON recipients (campaign_id, status, position);
