"""SQL of chats (asyncpg; the pool's search_path is the ``messaging`` schema)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass
class ChatUpsert:
    """One chat touched by new messages: created if missing, else moved forward."""

    id: str
    account_id: str
    device_id: str
    jid: str
    phone: str | None
    is_group: bool
    name: str | None
    preview: str | None
    last_at: datetime | None
    unread: int
    # the contact's LID JID, when the message told it
    lid: str | None = None


_UPSERT = """
INSERT INTO chats AS c (id, account_id, device_id, jid, phone, is_group, name,
                        last_message_preview, last_message_at, activity_at, unread_count, lead_id,
                        lid)
SELECT d.id, d.account_id, d.device_id, d.jid, d.phone, d.is_group, d.name,
       d.preview, d.last_at, coalesce(d.last_at, now()), d.unread,
       (SELECT l.lead_id FROM lead_links l
         WHERE l.account_id = d.account_id AND (l.chat_id = d.id OR l.phone = d.phone)
         ORDER BY (l.chat_id = d.id) DESC, l.updated_at DESC LIMIT 1),
       d.lid
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::bool[], $7::text[],
            $8::text[], $9::timestamptz[], $10::int[], $11::text[])
     AS d(id, account_id, device_id, jid, phone, is_group, name, preview, last_at, unread, lid)
ORDER BY d.id
ON CONFLICT (id) DO UPDATE SET
    name = coalesce(excluded.name, c.name),
    lid = coalesce(excluded.lid, c.lid),
    unread_count = c.unread_count + excluded.unread_count,
    last_message_preview = CASE
        WHEN excluded.last_message_at >= coalesce(c.last_message_at, '-infinity')
        THEN excluded.last_message_preview ELSE c.last_message_preview END,
    last_message_at = greatest(c.last_message_at, excluded.last_message_at),
    activity_at = greatest(c.activity_at, excluded.activity_at),
    lead_id = coalesce(c.lead_id, excluded.lead_id),
    updated_at = now()
RETURNING c.*, (c.xmax = 0) AS inserted
"""


async def upsert_many(
    conn: asyncpg.Connection, chats: Sequence[ChatUpsert]
) -> list[asyncpg.Record]:
    """Each chat id must appear once (ON CONFLICT cannot touch a row twice)."""
    if not chats:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(
        _UPSERT,
        [c.id for c in chats],
        [c.account_id for c in chats],
        [c.device_id for c in chats],
        [c.jid for c in chats],
        [c.phone for c in chats],
        [c.is_group for c in chats],
        [c.name for c in chats],
        [c.preview for c in chats],
        [c.last_at for c in chats],
        [c.unread for c in chats],
        [c.lid for c in chats],
    )
    return rows


# ---- contact identity: one person, one chat per device ------------------------------


async def lock_by_lids(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, str, str]]
) -> list[asyncpg.Record]:
    """The chats that know these ``(account_id, device_id, lid)``, locked in id order."""
    if not keys:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT c.id, c.account_id, c.device_id, c.jid, c.lid FROM chats c
        JOIN unnest($1::uuid[], $2::uuid[], $3::text[]) AS k(account_id, device_id, lid)
          ON c.account_id = k.account_id AND c.device_id = k.device_id AND c.lid = k.lid
        ORDER BY c.id
        FOR UPDATE OF c
        """,
        [a for a, _, _ in keys],
        [d for _, d, _ in keys],
        [lid for _, _, lid in keys],
    )
    return rows


async def forget_lid(conn: asyncpg.Connection, chat_id: str) -> None:
    """The LID now belongs to another number's chat."""
    await conn.execute("UPDATE chats SET lid = NULL, updated_at = now() WHERE id = $1", chat_id)


async def merge_into(
    conn: asyncpg.Connection, source_id: str, target_id: str, jid: str, phone: str | None
) -> None:
    """The chat ``source_id`` (opened by LID) and the person's phone chat
    ``target_id`` are one: its messages, unread count, lead link and name move
    over, and the phone chat is created from it when it did not exist yet."""
    await conn.execute("UPDATE messages SET chat_id = $2 WHERE chat_id = $1", source_id, target_id)
    await conn.execute(
        "UPDATE lead_links SET chat_id = $2 WHERE chat_id = $1", source_id, target_id
    )
    exists = await conn.fetchval("SELECT 1 FROM chats WHERE id = $1 FOR UPDATE", target_id)
    if not exists:
        # the phone chat is this one, under the id every context derives from the phone
        await conn.execute(
            "UPDATE chats SET id = $2, jid = $3, phone = $4, updated_at = now() WHERE id = $1",
            source_id,
            target_id,
            jid,
            phone,
        )
        return
    source = await conn.fetchrow("DELETE FROM chats WHERE id = $1 RETURNING *", source_id)
    if source is None:
        return
    await conn.execute(
        """
        UPDATE chats c SET
            unread_count = c.unread_count + $2,
            lead_id = coalesce(c.lead_id, $3),
            name = coalesce(c.name, $4),
            lid = coalesce(c.lid, $5),
            last_message_preview = CASE
                WHEN $7::timestamptz > coalesce(c.last_message_at, '-infinity')
                THEN $6 ELSE c.last_message_preview END,
            last_message_at = greatest(c.last_message_at, $7),
            activity_at = greatest(c.activity_at, $8),
            created_at = least(c.created_at, $9),
            updated_at = now()
        WHERE c.id = $1
        """,
        target_id,
        source["unread_count"],
        source["lead_id"],
        source["name"],
        source["lid"],
        source["last_message_preview"],
        source["last_message_at"],
        source["activity_at"],
        source["created_at"],
    )


async def get_by_id_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, chat_id: str, account_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM chats WHERE id = $1 AND account_id = $2", chat_id, account_id
    )


async def list_for_account(
    conn: asyncpg.Connection | asyncpg.Pool,
    account_id: str,
    *,
    device_id: str | None,
    q: str | None,
    unread_only: bool,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    pattern = digits_pattern = None
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        digits = "".join(ch for ch in q if ch.isdigit())
        digits_pattern = f"%{digits}%" if digits else None
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM chats
        WHERE account_id = $1
          AND ($2::uuid IS NULL OR device_id = $2)
          AND ($3::text IS NULL OR name ILIKE $3 OR phone ILIKE $3 OR jid ILIKE $3
               OR ($4::text IS NOT NULL AND phone LIKE $4))
          AND (NOT $5::bool OR unread_count > 0)
          AND ($6::timestamptz IS NULL OR (activity_at, id) < ($6, $7::uuid))
        ORDER BY activity_at DESC, id DESC
        LIMIT $8
        """,
        account_id,
        device_id,
        pattern,
        digits_pattern,
        unread_only,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return rows


async def mark_read(
    conn: asyncpg.Connection, chat_id: str, account_id: str
) -> list[asyncpg.Record]:
    """Unread to 0; the inbound messages that were unread become ``read`` and are returned."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        UPDATE messages SET status = 'read', updated_at = now()
        WHERE chat_id = $1 AND account_id = $2 AND direction = 'in' AND status = 'received'
        RETURNING wa_message_id, sender_jid
        """,
        chat_id,
        account_id,
    )
    await conn.execute(
        "UPDATE chats SET unread_count = 0, updated_at = now() WHERE id = $1 AND account_id = $2",
        chat_id,
        account_id,
    )
    return rows


async def set_last_message(
    conn: asyncpg.Connection,
    chat_id: str,
    preview: str | None,
    last_at: datetime | None,
) -> None:
    await conn.execute(
        """
        UPDATE chats SET last_message_preview = $2, last_message_at = $3,
                         activity_at = coalesce($3, created_at), updated_at = now()
        WHERE id = $1
        """,
        chat_id,
        preview,
        last_at,
    )


async def delete(conn: asyncpg.Connection, chat_id: str) -> None:
    await conn.execute("DELETE FROM chats WHERE id = $1", chat_id)


# ---- lead links (from app.*.lead_* events) ------------------------------------------


async def upsert_lead_links(
    conn: asyncpg.Connection,
    links: list[tuple[str, str, str | None, str | None, datetime]],
) -> list[tuple[str, str, str | None, str | None]]:
    """Record each lead's chat/phone (``(lead_id, account_id, chat_id, phone,
    updated_at)``, one row per lead); returns the links that changed (those a newer
    event had not already recorded)."""
    if not links:
        return []
    rows = await conn.fetch(
        """
        INSERT INTO lead_links AS l (lead_id, account_id, chat_id, phone, updated_at)
        SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::timestamptz[])
        ON CONFLICT (lead_id) DO UPDATE
            SET chat_id = excluded.chat_id, phone = excluded.phone, updated_at = excluded.updated_at
            WHERE l.updated_at <= excluded.updated_at AND l.account_id = excluded.account_id
        RETURNING lead_id, account_id, chat_id, phone
        """,
        *(list(column) for column in zip(*links, strict=True)),
    )
    return [
        (
            str(r["lead_id"]),
            str(r["account_id"]),
            str(r["chat_id"]) if r["chat_id"] else None,
            r["phone"],
        )
        for r in rows
    ]


async def link_leads(
    conn: asyncpg.Connection, links: list[tuple[str, str, str | None, str | None]]
) -> None:
    """Point chats at their lead (``(lead_id, account_id, chat_id, phone)``): the
    chat of the lead and the chats of its phone; chats that no longer match (the
    lead's phone or chat changed) are unlinked."""
    if not links:
        return
    columns = [list(column) for column in zip(*links, strict=True)]
    await conn.execute(
        """
        UPDATE chats c SET lead_id = NULL, updated_at = now()
        FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[])
            AS f(lead_id, account_id, chat_id, phone)
        WHERE c.account_id = f.account_id AND c.lead_id = f.lead_id
          AND c.id IS DISTINCT FROM f.chat_id AND c.phone IS DISTINCT FROM f.phone
        """,
        *columns,
    )
    await conn.execute(
        """
        UPDATE chats c SET lead_id = f.lead_id, updated_at = now()
        FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[])
            AS f(lead_id, account_id, chat_id, phone)
        WHERE c.account_id = f.account_id AND (c.id = f.chat_id OR c.phone = f.phone)
          AND c.lead_id IS DISTINCT FROM f.lead_id
        """,
        *columns,
    )


async def unlink_leads(conn: asyncpg.Connection, leads: list[tuple[str, str]]) -> None:
    """Forget deleted leads (``(lead_id, account_id)``) and unlink their chats."""
    if not leads:
        return
    columns = [list(column) for column in zip(*leads, strict=True)]
    await conn.execute(
        """
        DELETE FROM lead_links l USING unnest($1::uuid[], $2::uuid[]) AS d(lead_id, account_id)
        WHERE l.lead_id = d.lead_id AND l.account_id = d.account_id
        """,
        *columns,
    )
    await conn.execute(
        """
        UPDATE chats c SET lead_id = NULL, updated_at = now()
        FROM unnest($1::uuid[], $2::uuid[]) AS d(lead_id, account_id)
        WHERE c.account_id = d.account_id AND c.lead_id = d.lead_id
        """,
        *columns,
    )
