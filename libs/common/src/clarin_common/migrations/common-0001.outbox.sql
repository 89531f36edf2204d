-- The outbox of clarin_common.outbox, in every service schema: application events
-- written in the transaction of the change they announce, published after commit
-- and deleted once JetStream acknowledged them; the relay republishes whatever a
-- crash or a NATS outage left behind. (leads had it before it was shared: hence
-- IF NOT EXISTS.)
CREATE TABLE IF NOT EXISTS outbox (
    id uuid PRIMARY KEY,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_created_idx ON outbox (created_at);
