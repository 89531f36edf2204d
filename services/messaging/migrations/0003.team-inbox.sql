-- messaging: chats as conversations (status, assignee, labels), private notes,
-- quick replies and accent-insensitive message search

-- unaccent is a trusted extension (PostgreSQL 13+): the database owner may create
-- it. It lives in public so that every schema finds the one copy.
CREATE EXTENSION IF NOT EXISTS unaccent WITH SCHEMA public;

-- unaccent() is only STABLE (it reads its dictionary by name); with the
-- dictionary named explicitly it is safe to call it immutable, which an index
-- or a generated column needs.
CREATE FUNCTION messaging.search_text(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT lower(public.unaccent('public.unaccent'::regdictionary, $1)) $$;

-- ---- chats as conversations -------------------------------------------------------

ALTER TABLE chats
    ADD COLUMN status text NOT NULL DEFAULT 'open'
        CONSTRAINT chats_status_check CHECK (status IN ('open', 'pending', 'resolved')),
    ADD COLUMN assigned_to uuid,
    ADD COLUMN labels text[] NOT NULL DEFAULT '{}';

-- the inbox tabs: mine / unassigned (assigned_to IS NULL) / a colleague's, by status
CREATE INDEX chats_account_assignee_status_idx
    ON chats (account_id, assigned_to, status, activity_at DESC, id DESC);
-- all chats of one status
CREATE INDEX chats_account_status_idx ON chats (account_id, status, activity_at DESC, id DESC);
CREATE INDEX chats_labels_idx ON chats USING gin (labels);
-- the unread counts per tab only ever look at chats with something unread
CREATE INDEX chats_account_unread_idx ON chats (account_id, assigned_to, status)
    WHERE unread_count > 0;

-- ---- private notes ---------------------------------------------------------------

ALTER TABLE messages DROP CONSTRAINT messages_direction_check;
ALTER TABLE messages
    ADD CONSTRAINT messages_direction_check CHECK (direction IN ('in', 'out', 'note')),
    ADD COLUMN author_id uuid;

-- ---- search ----------------------------------------------------------------------

-- words of the body without accents or case ('simple': no stemming, so any
-- language matches as written)
ALTER TABLE messages
    ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig, messaging.search_text(coalesce(body, '')))
    ) STORED;
CREATE INDEX messages_search_idx ON messages USING gin (search_vector);
-- a frequent word is searched newest first through this index, stopping once
-- enough messages match
CREATE INDEX messages_account_sent_idx ON messages (account_id, sent_at DESC);

-- ---- quick replies ---------------------------------------------------------------

CREATE TABLE quick_replies (
    id uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    shortcut text NOT NULL CHECK (shortcut ~ '^[A-Za-z0-9_-]{1,40}$'),
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- "/Saludo" and "/saludo" are the same shortcut to whoever types it
CREATE UNIQUE INDEX quick_replies_account_shortcut_key
    ON quick_replies (account_id, lower(shortcut));
