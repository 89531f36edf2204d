-- messaging: chats, messages, the media index and the lead links it learns from events

CREATE TABLE chats (
    id uuid PRIMARY KEY,  -- clarin_common.ids.chat_id_for(device_id, jid)
    account_id uuid NOT NULL,
    device_id uuid NOT NULL,
    jid text NOT NULL,
    name text,
    phone text,
    is_group boolean NOT NULL DEFAULT false,
    last_message_preview text,
    last_message_at timestamptz,
    -- the order of the inbox: last_message_at, or created_at before any message
    activity_at timestamptz NOT NULL DEFAULT now(),
    unread_count integer NOT NULL DEFAULT 0 CHECK (unread_count >= 0),
    lead_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chats_device_jid_key UNIQUE (device_id, jid)
);
CREATE INDEX chats_account_activity_idx ON chats (account_id, activity_at DESC, id DESC);
CREATE INDEX chats_account_phone_idx ON chats (account_id, phone) WHERE phone IS NOT NULL;
CREATE INDEX chats_lead_idx ON chats (lead_id) WHERE lead_id IS NOT NULL;

CREATE TABLE messages (
    id uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    -- deferred: a batch inserts its messages first and then upserts their chats
    chat_id uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    device_id uuid NOT NULL,
    wa_message_id text,
    direction text NOT NULL CHECK (direction IN ('in', 'out')),
    type text NOT NULL,
    body text,
    status text NOT NULL
        CHECK (status IN ('pending', 'sent', 'delivered', 'read', 'failed', 'received')),
    error text,
    sender_jid text,
    sender_name text,
    sent_at timestamptz NOT NULL,
    client_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_device_wa_message_id_key UNIQUE (device_id, wa_message_id),
    CONSTRAINT messages_account_client_id_key UNIQUE (account_id, client_id)
);
CREATE INDEX messages_chat_sent_idx ON messages (chat_id, sent_at DESC, id DESC);
CREATE INDEX messages_chat_unread_idx ON messages (chat_id) WHERE status = 'received';

-- the media index: where the bytes of a message's media live in the media store
CREATE TABLE media (
    message_id uuid PRIMARY KEY
        REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    account_id uuid NOT NULL,
    storage_key text,  -- null when the bytes never arrived (expired in the object store)
    mime_type text NOT NULL,
    file_name text,
    size bigint NOT NULL,
    sha256 text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- leads as far as messaging needs them (from app.*.lead_* events), so that a chat
-- created after its lead still gets linked
CREATE TABLE lead_links (
    lead_id uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    chat_id uuid,
    phone text,
    updated_at timestamptz NOT NULL
);
CREATE INDEX lead_links_chat_idx ON lead_links (account_id, chat_id) WHERE chat_id IS NOT NULL;
CREATE INDEX lead_links_phone_idx ON lead_links (account_id, phone) WHERE phone IS NOT NULL;
