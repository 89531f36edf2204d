-- depends: 0003.team-inbox
-- messaging: the whole WhatsApp conversation. Quoted replies, reactions (one per
-- sender), edits (the previous text kept for audit), deletes for everyone,
-- updates that arrive before their message, and history imports.

-- a reply names the quoted message by its wa_message_id (resolved in the same
-- chat when read, so a quote of a message that arrives later links up too) and
-- keeps the quote's own preview for a message we never stored
ALTER TABLE messages
    ADD COLUMN reply_to_wa_id text,
    ADD COLUMN quoted_body text,
    ADD COLUMN quoted_type text,
    ADD COLUMN quoted_sender_jid text,
    ADD COLUMN quoted_from_me boolean NOT NULL DEFAULT false,
    ADD COLUMN edited_at timestamptz,
    -- deleted for everyone: body and media are gone, the row stays
    ADD COLUMN deleted_at timestamptz;

-- the previous text of each edit, for audit (never in the API)
CREATE TABLE message_edits (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    account_id uuid NOT NULL,
    previous_body text,
    from_me boolean NOT NULL,
    edited_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_edits_message_idx ON message_edits (message_id);

-- one reaction per sender and message; a removal keeps the row with emoji ''
-- so that an older reaction delivered late cannot bring it back
CREATE TABLE message_reactions (
    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    sender_key text NOT NULL,  -- the sender's JID, or 'me' for our own number
    account_id uuid NOT NULL,
    sender_jid text,
    emoji text NOT NULL,
    from_me boolean NOT NULL,
    reacted_at timestamptz NOT NULL,
    PRIMARY KEY (message_id, sender_key)
);

-- an edit, revoke or reaction whose message is not stored yet: applied when the
-- message arrives, dropped after a day
CREATE TABLE pending_updates (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id uuid NOT NULL,
    device_id uuid NOT NULL,
    wa_message_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('edit', 'revoke', 'reaction')),
    payload jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_updates_message_idx ON pending_updates (device_id, wa_message_id);
CREATE INDEX pending_updates_received_idx ON pending_updates (received_at);

-- one history sync of a device: what it added, and whether it finished
CREATE TABLE history_syncs (
    device_id uuid NOT NULL,
    sync_id text NOT NULL,
    account_id uuid NOT NULL,
    chats integer NOT NULL DEFAULT 0,
    messages integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (device_id, sync_id)
);
