"""SQL of chats (asyncpg; the pool's search_path is the ``messaging`` schema)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from clarin_common.contract import Chat
from clarin_common.paging import Key
from clarin_messaging.convert import chat_from_row


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
    over (with its assignee and labels, so the team's triage survives), and the
    phone chat is created from it when it did not exist yet."""
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
            assigned_to = coalesce(c.assigned_to, $10),
            labels = ARRAY(SELECT DISTINCT unnest(c.labels || $11::text[]) ORDER BY 1),
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
        source["assigned_to"],
        list(source["labels"]),
    )


async def get_by_id_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, chat_id: str, account_id: str
) -> Chat | None:
    row = await conn.fetchrow(
        "SELECT * FROM chats WHERE id = $1 AND account_id = $2", chat_id, account_id
    )
    return chat_from_row(row) if row is not None else None


@dataclass
class ChatFilters:
    """The inbox list's filters; ``assigned_to`` is a user id, ``NONE`` or None (any)."""

    device_id: str | None = None
    q: str | None = None
    unread_only: bool = False
    status: str | None = None
    assigned_to: str | None = None
    label: str | None = None


# ``assigned_to`` filter value for "nobody"
NONE = "none"


def _filter_sql(account_id: str, filters: ChatFilters) -> tuple[list[str], list[object]]:
    """WHERE clauses and their arguments: only the filters given, so that each
    shape of the query gets its own plan on the matching index."""
    args: list[object] = [account_id]
    where = ["account_id = $1"]

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if filters.device_id is not None:
        where.append(f"device_id = {arg(filters.device_id)}::uuid")
    if filters.status is not None:
        where.append(f"status = {arg(filters.status)}")
    if filters.assigned_to == NONE:
        where.append("assigned_to IS NULL")
    elif filters.assigned_to is not None:
        where.append(f"assigned_to = {arg(filters.assigned_to)}::uuid")
    if filters.label is not None:
        where.append(f"labels @> ARRAY[{arg(filters.label)}::text]")
    if filters.unread_only:
        where.append("unread_count > 0")
    if filters.q:
        escaped = filters.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = arg(f"%{escaped}%")
        clause = f"name ILIKE {pattern} OR phone ILIKE {pattern} OR jid ILIKE {pattern}"
        digits = "".join(ch for ch in filters.q if ch.isdigit())
        if digits:
            clause += f" OR phone LIKE {arg(f'%{digits}%')}"
        where.append(f"({clause})")
    return where, args


async def get_many_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, chat_ids: Sequence[str], account_id: str
) -> list[Chat]:
    if not chat_ids:
        return []
    rows = await conn.fetch(
        "SELECT * FROM chats WHERE id = ANY($1::uuid[]) AND account_id = $2",
        list(chat_ids),
        account_id,
    )
    return [chat_from_row(r) for r in rows]


async def list_for_account(
    conn: asyncpg.Connection | asyncpg.Pool,
    account_id: str,
    filters: ChatFilters,
    *,
    after: Key | None,
    limit: int,
) -> list[asyncpg.Record]:
    where, args = _filter_sql(account_id, filters)
    if after is not None:
        args.extend((after.at, after.id))
        where.append(f"(activity_at, id) < (${len(args) - 1}::timestamptz, ${len(args)}::uuid)")
    args.append(limit)
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT * FROM chats
        WHERE {" AND ".join(where)}
        ORDER BY activity_at DESC, id DESC
        LIMIT ${len(args)}
        """,
        *args,
    )
    return rows


async def unread_counts(
    conn: asyncpg.Connection | asyncpg.Pool,
    account_id: str,
    user_id: str,
    *,
    device_id: str | None,
    status: str | None,
) -> asyncpg.Record:
    """Chats with something unread: all, assigned to ``user_id``, unassigned."""
    where, args = _filter_sql(account_id, ChatFilters(device_id=device_id, status=status))
    args.append(user_id)
    row: asyncpg.Record = await conn.fetchrow(
        f"""
        SELECT count(*) AS all,
               count(*) FILTER (WHERE assigned_to = ${len(args)}::uuid) AS mine,
               count(*) FILTER (WHERE assigned_to IS NULL) AS unassigned
        FROM chats
        WHERE {" AND ".join(where)} AND unread_count > 0
        """,
        *args,
    )
    return row


async def labels_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT label, count(*) AS chats
        FROM chats, unnest(labels) AS label
        WHERE account_id = $1 AND labels <> '{}'
        GROUP BY label ORDER BY label
        """,
        account_id,
    )
    return rows


async def lock_for_account(conn: asyncpg.Connection, chat_id: str, account_id: str) -> Chat | None:
    row = await conn.fetchrow(
        "SELECT * FROM chats WHERE id = $1 AND account_id = $2 FOR UPDATE", chat_id, account_id
    )
    return chat_from_row(row) if row is not None else None


async def update_conversation(
    conn: asyncpg.Connection,
    chat_id: str,
    account_id: str,
    *,
    status: str,
    assigned_to: str | None,
    labels: list[str],
) -> Chat:
    row = await conn.fetchrow(
        """
        UPDATE chats SET status = $3, assigned_to = $4::uuid, labels = $5::text[],
                         updated_at = now()
        WHERE id = $1 AND account_id = $2
        RETURNING *
        """,
        chat_id,
        account_id,
        status,
        assigned_to,
        labels,
    )
    assert row is not None  # the caller holds the row's lock
    return chat_from_row(row)


async def reopen_resolved(
    conn: asyncpg.Connection, chat_ids: Sequence[str]
) -> list[asyncpg.Record]:
    """An inbound message sets a resolved chat back to open; returns the chats
    reopened (already locked by this batch's upsert, in id order)."""
    if not chat_ids:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        UPDATE chats SET status = 'open', updated_at = now()
        WHERE id = ANY($1::uuid[]) AND status = 'resolved'
        RETURNING *
        """,
        sorted(chat_ids),
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
