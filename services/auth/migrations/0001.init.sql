-- Accounts (tenants), their users and the refresh tokens of their sessions.

CREATE TABLE accounts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- stored normalised (trimmed, lower case); unique across every account
    email text NOT NULL CONSTRAINT users_email_normalised CHECK (email = lower(btrim(email))),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role text NOT NULL CHECK (role IN ('admin', 'agent')),
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE INDEX users_account_id_idx ON users (account_id, created_at);

-- Opaque refresh tokens: only their SHA-256 is stored. Every login starts a
-- family; each refresh spends one token (used_at) and adds the next one to the
-- family. Presenting a spent token revokes the whole family.
CREATE TABLE refresh_tokens (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    account_id uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    family_id uuid NOT NULL,
    token_hash text NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refresh_tokens_token_hash_key UNIQUE (token_hash)
);

CREATE INDEX refresh_tokens_family_id_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id, expires_at);
