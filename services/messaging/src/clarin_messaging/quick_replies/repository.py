"""SQL of quick replies (asyncpg; the pool's search_path is the ``messaging`` schema)."""

from __future__ import annotations

import asyncpg

from clarin_common.db import to_model
from clarin_messaging.quick_replies.schemas import QuickReply

# the unique index on (account_id, lower(shortcut))
SHORTCUT_UNIQUE = "quick_replies_account_shortcut_key"

_COLUMNS = "id, shortcut, body, created_at"


async def list_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str
) -> list[QuickReply]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM quick_replies WHERE account_id = $1 ORDER BY lower(shortcut), id",
        account_id,
    )
    return [to_model(QuickReply, r) for r in rows]


async def insert(
    conn: asyncpg.Connection | asyncpg.Pool, id_: str, account_id: str, shortcut: str, body: str
) -> QuickReply:
    row = await conn.fetchrow(
        f"""
        INSERT INTO quick_replies (id, account_id, shortcut, body) VALUES ($1, $2, $3, $4)
        RETURNING {_COLUMNS}
        """,
        id_,
        account_id,
        shortcut,
        body,
    )
    assert row is not None
    return to_model(QuickReply, row)


async def update_for_account(
    conn: asyncpg.Connection | asyncpg.Pool,
    id_: str,
    account_id: str,
    shortcut: str | None,
    body: str | None,
) -> QuickReply | None:
    row = await conn.fetchrow(
        f"""
        UPDATE quick_replies
        SET shortcut = coalesce($3, shortcut), body = coalesce($4, body), updated_at = now()
        WHERE id = $1 AND account_id = $2
        RETURNING {_COLUMNS}
        """,
        id_,
        account_id,
        shortcut,
        body,
    )
    return to_model(QuickReply, row) if row is not None else None


async def delete_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, id_: str, account_id: str
) -> bool:
    deleted = await conn.fetchval(
        "DELETE FROM quick_replies WHERE id = $1 AND account_id = $2 RETURNING id",
        id_,
        account_id,
    )
    return deleted is not None
