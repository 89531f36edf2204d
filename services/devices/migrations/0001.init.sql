-- Devices: one linked WhatsApp number each, with the state the user asked for
-- (desired_state) and the state the owning worker reports (status).
CREATE TABLE devices (
    id uuid PRIMARY KEY,
    account_id text NOT NULL,
    name text NOT NULL,
    phone text,
    jid text,
    status text NOT NULL DEFAULT 'disconnected'
        CHECK (status IN ('disconnected', 'connecting', 'qr_pending', 'connected', 'logged_out', 'error')),
    desired_state text NOT NULL DEFAULT 'disconnected'
        CHECK (desired_state IN ('connected', 'disconnected', 'logged_out')),
    last_error text,
    last_seen_at timestamptz,
    -- the latest QR code while status is qr_pending
    qr_code text,
    qr_expires_at timestamptz,
    -- the worker holding the device's lease; its status writes are conditional on it
    worker_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX devices_account_created_idx ON devices (account_id, created_at, id);
CREATE INDEX devices_wanted_idx ON devices (id) WHERE desired_state = 'connected';
