-- depends: 0001.init
-- One person, one chat: the contact's LID (``…@lid``) beside the phone-form jid.
-- Media in two phases: a message's file may still be on its way, or failed.

ALTER TABLE chats ADD COLUMN lid text;
CREATE UNIQUE INDEX chats_device_lid_key ON chats (device_id, lid) WHERE lid IS NOT NULL;

ALTER TABLE media
    ADD COLUMN status text NOT NULL DEFAULT 'ready'
        CHECK (status IN ('ready', 'pending', 'failed', 'too_large')),
    ADD COLUMN error text,
    -- a failed download the worker may try again (``retry_media``)
    ADD COLUMN retryable boolean NOT NULL DEFAULT false,
    -- what the worker needs to fetch the file again, handed back as it came
    ADD COLUMN download text,
    -- the chat address the message came on (the retry command names it)
    ADD COLUMN wa_chat_jid text,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
