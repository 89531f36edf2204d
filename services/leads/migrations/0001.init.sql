-- Pipeline stages are per account; every account is seeded lazily (on first use)
-- with new, contacted, qualified, proposal, won, lost.
CREATE TABLE stages (
    account_id uuid NOT NULL,
    key text NOT NULL,
    name text NOT NULL,
    position integer NOT NULL,
    PRIMARY KEY (account_id, key)
);

CREATE TABLE leads (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id uuid NOT NULL,
    name text NOT NULL,
    phone text,
    email text,
    company text,
    stage text NOT NULL,
    tags text[] NOT NULL DEFAULT '{}',
    notes text,
    value numeric(16, 2) CHECK (value >= 0),
    assigned_to uuid,
    source text NOT NULL CHECK (source IN ('manual', 'whatsapp')),
    chat_id uuid,
    last_contact_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- NULL phones are distinct, so leads without a phone never collide
    CONSTRAINT leads_account_phone_key UNIQUE (account_id, phone),
    CONSTRAINT leads_stage_fkey FOREIGN KEY (account_id, stage)
        REFERENCES stages (account_id, key) ON UPDATE CASCADE
);

CREATE INDEX leads_account_created_idx ON leads (account_id, created_at DESC, id DESC);
CREATE INDEX leads_account_stage_idx ON leads (account_id, stage, created_at DESC, id DESC);
CREATE INDEX leads_account_assigned_idx ON leads (account_id, assigned_to)
    WHERE assigned_to IS NOT NULL;

-- Application events written in the same transaction as the change they announce,
-- published after commit and deleted once JetStream acknowledged them; the relay
-- republishes whatever a crash or a NATS outage left behind.
CREATE TABLE outbox (
    id uuid PRIMARY KEY,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_created_idx ON outbox (created_at);
