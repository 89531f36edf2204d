"""SQL of messages and the media index (asyncpg; multi-row statements via unnest)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from clarin_common.paging import Key

# a reply's quoted message is found by its wa_message_id in the same chat when
# read, so a quote links up whichever of the two arrived first
SELECT_MESSAGE = """
SELECT m.id, m.account_id, m.chat_id, m.device_id, m.wa_message_id, m.direction, m.type,
       m.body, m.status, m.error, m.sender_jid, m.sender_name, m.sent_at, m.client_id,
       m.author_id, m.edited_at, m.deleted_at,
       m.reply_to_wa_id, m.quoted_body, m.quoted_type, m.quoted_sender_jid, m.quoted_from_me,
       q.id AS q_id, q.type AS q_type, q.body AS q_body, q.sender_jid AS q_sender_jid,
       q.direction AS q_direction, q.deleted_at AS q_deleted_at,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('emoji', r.emoji,
                                                     'sender_jid', r.sender_jid,
                                                     'from_me', r.from_me)
                                  ORDER BY r.reacted_at, r.sender_key), '[]'::jsonb)
          FROM message_reactions r WHERE r.message_id = m.id AND r.emoji <> '') AS reactions,
       md.mime_type AS media_mime_type, md.file_name AS media_file_name,
       md.size AS media_size, md.storage_key AS media_storage_key,
       md.status AS media_status, md.error AS media_error
FROM messages m LEFT JOIN media md ON md.message_id = m.id
LEFT JOIN messages q ON m.reply_to_wa_id IS NOT NULL AND q.device_id = m.device_id
     AND q.wa_message_id = m.reply_to_wa_id AND q.chat_id = m.chat_id
"""

# the order of a message's status; `failed` is only ever reached from `pending`
STATUS_RANK = {"failed": -1, "pending": 0, "sent": 1, "delivered": 2, "read": 3}


@dataclass
class NewMessage:
    id: str
    account_id: str
    chat_id: str
    device_id: str
    wa_message_id: str | None
    direction: str
    type: str
    body: str | None
    status: str
    sender_jid: str | None
    sender_name: str | None
    sent_at: datetime
    client_id: str | None
    # who wrote a private note
    author_id: str | None = None
    # the quoted message of a reply, and the quote's own preview of it
    reply_to_wa_id: str | None = None
    quoted_body: str | None = None
    quoted_type: str | None = None
    quoted_sender_jid: str | None = None
    quoted_from_me: bool = False


@dataclass
class NewMedia:
    message_id: str
    account_id: str
    storage_key: str | None
    mime_type: str
    file_name: str | None
    size: int
    sha256: str | None
    # ``pending`` while the worker fetches the file (announced by ``media_info``)
    status: str = "ready"
    error: str | None = None
    retryable: bool = False
    download: str | None = None
    wa_chat_jid: str | None = None


async def insert_many(conn: asyncpg.Connection, messages: Sequence[NewMessage]) -> set[str]:
    """Insert what is new; a message already there (by id, by device and
    ``wa_message_id``, or by account and ``client_id``) is left alone. Returns
    the ids actually inserted."""
    if not messages:
        return set()
    rows = await conn.fetch(
        """
        INSERT INTO messages (id, account_id, chat_id, device_id, wa_message_id, direction, type,
                              body, status, sender_jid, sender_name, sent_at, client_id,
                              author_id, reply_to_wa_id, quoted_body, quoted_type,
                              quoted_sender_jid, quoted_from_me)
        SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                             $11::text[], $12::timestamptz[], $13::text[], $14::uuid[],
                             $15::text[], $16::text[], $17::text[], $18::text[], $19::bool[])
        ON CONFLICT DO NOTHING
        RETURNING id
        """,
        [m.id for m in messages],
        [m.account_id for m in messages],
        [m.chat_id for m in messages],
        [m.device_id for m in messages],
        [m.wa_message_id for m in messages],
        [m.direction for m in messages],
        [m.type for m in messages],
        [m.body for m in messages],
        [m.status for m in messages],
        [m.sender_jid for m in messages],
        [m.sender_name for m in messages],
        [m.sent_at for m in messages],
        [m.client_id for m in messages],
        [m.author_id for m in messages],
        [m.reply_to_wa_id for m in messages],
        [m.quoted_body for m in messages],
        [m.quoted_type for m in messages],
        [m.quoted_sender_jid for m in messages],
        [m.quoted_from_me for m in messages],
    )
    return {str(r["id"]) for r in rows}


async def insert_one(conn: asyncpg.Connection, message: NewMessage) -> bool:
    return bool(await insert_many(conn, [message]))


async def insert_media_many(conn: asyncpg.Connection, media: Sequence[NewMedia]) -> None:
    if not media:
        return
    await conn.execute(
        """
        INSERT INTO media (message_id, account_id, storage_key, mime_type, file_name, size, sha256,
                           status, error, retryable, download, wa_chat_jid)
        SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                             $6::bigint[], $7::text[], $8::text[], $9::text[], $10::bool[],
                             $11::text[], $12::text[])
        ON CONFLICT (message_id) DO NOTHING
        """,
        [m.message_id for m in media],
        [m.account_id for m in media],
        [m.storage_key for m in media],
        [m.mime_type for m in media],
        [m.file_name for m in media],
        [m.size for m in media],
        [m.sha256 for m in media],
        [m.status for m in media],
        [m.error for m in media],
        [m.retryable for m in media],
        [m.download for m in media],
        [m.wa_chat_jid for m in media],
    )


@dataclass
class MediaOutcome:
    """The end of a download the worker announced: the file stored under
    ``storage_key`` (``ready``), or why not."""

    message_id: str
    account_id: str
    status: str  # ready | failed | too_large
    error: str | None
    retryable: bool
    storage_key: str | None = None
    size: int | None = None
    sha256: str | None = None


async def apply_media_outcomes(
    conn: asyncpg.Connection, outcomes: Sequence[MediaOutcome]
) -> set[str]:
    """Settle media still ``pending`` (or ``failed``, awaiting a retry); ``ready``
    and ``too_large`` are final. Returns the message ids that changed."""
    if not outcomes:
        return set()
    rows = await conn.fetch(
        """
        UPDATE media md SET
            status = d.status, error = d.error, retryable = d.retryable,
            storage_key = coalesce(d.storage_key, md.storage_key),
            size = coalesce(d.size, md.size), sha256 = coalesce(d.sha256, md.sha256),
            updated_at = now()
        FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[], $6::text[],
                    $7::bigint[], $8::text[])
             AS d(message_id, account_id, status, error, retryable, storage_key, size, sha256)
        WHERE md.message_id = d.message_id AND md.account_id = d.account_id
          AND md.status IN ('pending', 'failed')
          AND NOT (md.status = 'failed' AND d.status = 'failed'
                   AND md.error IS NOT DISTINCT FROM d.error
                   AND md.retryable = d.retryable)
        RETURNING md.message_id
        """,
        [o.message_id for o in outcomes],
        [o.account_id for o in outcomes],
        [o.status for o in outcomes],
        [o.error for o in outcomes],
        [o.retryable for o in outcomes],
        [o.storage_key for o in outcomes],
        [o.size for o in outcomes],
        [o.sha256 for o in outcomes],
    )
    return {str(r["message_id"]) for r in rows}


async def existing_message_ids(conn: asyncpg.Connection, ids: Sequence[str]) -> set[str]:
    if not ids:
        return set()
    rows = await conn.fetch("SELECT id FROM messages WHERE id = ANY($1::uuid[])", list(ids))
    return {str(r["id"]) for r in rows}


STALLED_DOWNLOAD = "The download did not finish"


async def start_media_retry(
    conn: asyncpg.Connection, message_id: str, account_id: str, stale_after: float
) -> asyncpg.Record | None:
    """A failed, retryable download (or one ``pending`` for longer than
    ``stale_after`` seconds: its worker may have stopped mid-way) goes back to
    ``pending``; returns the row with ``previous_error``, or None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        UPDATE media md SET status = 'pending', error = NULL, updated_at = now()
        FROM (SELECT message_id,
                     coalesce(error, CASE WHEN status = 'pending' THEN $4 END) AS error
              FROM media
              WHERE message_id = $1 AND account_id = $2
                AND ((status = 'failed' AND retryable)
                     OR (status = 'pending' AND download IS NOT NULL
                         AND updated_at < now() - make_interval(secs => $3)))
              FOR UPDATE) AS before
        WHERE md.message_id = before.message_id
        RETURNING md.*, before.error AS previous_error
        """,
        message_id,
        account_id,
        stale_after,
        STALLED_DOWNLOAD,
    )
    return row


async def undo_media_retry(
    conn: asyncpg.Connection,
    message_id: str,
    account_id: str,
    error: str | None,
    retryable: bool,
) -> bool:
    """The retry never reached the worker: ``failed`` again (unless an outcome
    already settled it)."""
    done = await conn.fetchval(
        """
        UPDATE media SET status = 'failed', error = $3, retryable = $4, updated_at = now()
        WHERE message_id = $1 AND account_id = $2 AND status = 'pending'
        RETURNING message_id
        """,
        message_id,
        account_id,
        error,
        retryable,
    )
    return done is not None


async def get_by_id_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, message_id: str, account_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        SELECT_MESSAGE + " WHERE m.id = $1 AND m.account_id = $2", message_id, account_id
    )


async def get_by_client_id(
    conn: asyncpg.Connection | asyncpg.Pool, client_id: str, account_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        SELECT_MESSAGE + " WHERE m.client_id = $1 AND m.account_id = $2", client_id, account_id
    )


async def get_many(conn: asyncpg.Connection, ids: Sequence[str]) -> list[asyncpg.Record]:
    if not ids:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(
        SELECT_MESSAGE + " WHERE m.id = ANY($1::uuid[])", list(ids)
    )
    return rows


async def list_for_chat(
    conn: asyncpg.Connection | asyncpg.Pool,
    chat_id: str,
    account_id: str,
    *,
    after: Key | None,
    limit: int,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        SELECT_MESSAGE
        + """
        WHERE m.chat_id = $1 AND m.account_id = $2
          AND ($3::timestamptz IS NULL OR (m.sent_at, m.id) < ($3, $4::uuid))
        ORDER BY m.sent_at DESC, m.id DESC
        LIMIT $5
        """,
        chat_id,
        account_id,
        after.at if after else None,
        after.id if after else None,
        limit,
    )
    return rows


async def latest_in_chat(conn: asyncpg.Connection, chat_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, type, body, sent_at, deleted_at FROM messages "
        "WHERE chat_id = $1 AND direction <> 'note' ORDER BY sent_at DESC, id DESC LIMIT 1",
        chat_id,
    )


@dataclass
class SentUpdate:
    """WhatsApp accepted (``sent``, with its id) or refused (``failed``) a message."""

    message_id: str
    account_id: str
    status: str  # sent | failed
    wa_message_id: str | None
    error: str | None


async def settle_sent_many(
    conn: asyncpg.Connection, updates: Sequence[SentUpdate]
) -> list[asyncpg.Record]:
    """Apply acceptances and refusals of outbound messages, one per message id.

    ``sent`` moves a pending (or failed) message to sent and records its
    ``wa_message_id``; ``failed`` only ever replaces ``pending``. Returns the rows
    whose status changed: ``(id, account_id, chat_id, status)``.
    """
    if not updates:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        UPDATE messages m SET
            status = CASE
                WHEN d.status = 'sent' AND m.status IN ('pending', 'failed') THEN 'sent'
                WHEN d.status = 'failed' AND m.status = 'pending' THEN 'failed'
                ELSE m.status END,
            error = CASE WHEN d.status = 'failed' AND m.status = 'pending' THEN d.error
                         WHEN d.status = 'sent' THEN NULL ELSE m.error END,
            wa_message_id = CASE
                WHEN m.wa_message_id IS NULL AND d.wa_id IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM messages x
                    WHERE x.device_id = m.device_id AND x.wa_message_id = d.wa_id)
                THEN d.wa_id ELSE m.wa_message_id END,
            updated_at = now()
        FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[])
             AS d(id, account_id, status, wa_id, error)
        WHERE m.id = d.id AND m.account_id = d.account_id AND m.direction = 'out'
          AND ((d.status = 'sent' AND (m.status IN ('pending', 'failed')
                                       OR (m.wa_message_id IS NULL AND d.wa_id IS NOT NULL)))
               OR (d.status = 'failed' AND m.status = 'pending'))
        RETURNING m.id, m.account_id, m.chat_id, m.device_id, m.status
        """,
        [u.message_id for u in updates],
        [u.account_id for u in updates],
        [u.status for u in updates],
        [u.wa_message_id for u in updates],
        [u.error for u in updates],
    )
    return rows


@dataclass
class ReceiptUpdate:
    account_id: str
    device_id: str
    wa_message_id: str
    status: str  # delivered | read


async def apply_receipts(
    conn: asyncpg.Connection, receipts: Sequence[ReceiptUpdate]
) -> list[asyncpg.Record]:
    """Move outbound messages forward only (a late ``delivered`` never undoes ``read``).
    One entry per (device, wa_message_id). Returns the rows that changed."""
    if not receipts:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        UPDATE messages m SET status = d.status, error = NULL, updated_at = now()
        FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int[])
             AS d(account_id, device_id, wa_id, status, rank)
        WHERE m.device_id = d.device_id AND m.wa_message_id = d.wa_id
          AND m.account_id = d.account_id AND m.direction = 'out'
          AND (CASE m.status WHEN 'failed' THEN -1 WHEN 'pending' THEN 0 WHEN 'sent' THEN 1
                             WHEN 'delivered' THEN 2 WHEN 'read' THEN 3 ELSE 99 END) < d.rank
        RETURNING m.id, m.account_id, m.chat_id, m.device_id, m.status
        """,
        [r.account_id for r in receipts],
        [r.device_id for r in receipts],
        [r.wa_message_id for r in receipts],
        [r.status for r in receipts],
        [STATUS_RANK[r.status] for r in receipts],
    )
    return rows


async def delete_pending(conn: asyncpg.Connection, message_id: str) -> bool:
    deleted = await conn.fetchval(
        "DELETE FROM messages WHERE id = $1 AND status = 'pending' RETURNING id", message_id
    )
    return deleted is not None


async def get_media_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, message_id: str, account_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM media WHERE message_id = $1 AND account_id = $2", message_id, account_id
    )
