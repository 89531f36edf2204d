-- Users can be disabled (they keep their rows, history and assignments; they
-- cannot sign in), and a refresh-token family ends at an absolute time set at
-- login, however often it is refreshed.

ALTER TABLE users ADD COLUMN disabled boolean NOT NULL DEFAULT false;

ALTER TABLE refresh_tokens ADD COLUMN family_expires_at timestamptz;
UPDATE refresh_tokens SET family_expires_at = expires_at WHERE family_expires_at IS NULL;
ALTER TABLE refresh_tokens ALTER COLUMN family_expires_at SET NOT NULL;
ALTER TABLE refresh_tokens
    ADD CONSTRAINT refresh_tokens_within_family CHECK (expires_at <= family_expires_at);

-- the live sessions of a user (revoked when the user is disabled or changes password)
CREATE INDEX refresh_tokens_live_user_idx ON refresh_tokens (user_id)
    WHERE revoked_at IS NULL AND used_at IS NULL;
