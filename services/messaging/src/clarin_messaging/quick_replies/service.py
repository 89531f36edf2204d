"""Quick replies: saved answers an agent inserts with ``/shortcut``."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable

import asyncpg

from clarin_common.auth import Principal
from clarin_common.errors import Conflict, NotFound
from clarin_messaging.context import Messaging
from clarin_messaging.quick_replies import repository as repo
from clarin_messaging.quick_replies.schemas import (
    QuickReply,
    QuickReplyCreate,
    QuickReplyList,
    QuickReplyUpdate,
)


class ShortcutTaken(Conflict):
    code = "shortcut_taken"
    message = "Another quick reply already uses this shortcut"


def _reply(row: asyncpg.Record) -> QuickReply:
    return QuickReply(
        id=str(row["id"]), shortcut=row["shortcut"], body=row["body"], created_at=row["created_at"]
    )


async def _unique(write: Awaitable[asyncpg.Record | None]) -> asyncpg.Record | None:
    try:
        return await write
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == repo.SHORTCUT_UNIQUE:
            raise ShortcutTaken(
                details=[{"loc": ["body", "shortcut"], "msg": ShortcutTaken.message}]
            ) from exc
        raise


async def list_replies(ctx: Messaging, principal: Principal) -> QuickReplyList:
    rows = await repo.list_for_account(ctx.pool, principal.account_id)
    return QuickReplyList(items=[_reply(r) for r in rows])


async def create_reply(ctx: Messaging, principal: Principal, body: QuickReplyCreate) -> QuickReply:
    row = await _unique(
        repo.insert(ctx.pool, str(uuid.uuid4()), principal.account_id, body.shortcut, body.body)
    )
    assert row is not None
    return _reply(row)


def _reply_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise NotFound("Quick reply not found", code="quick_reply_not_found") from exc


async def update_reply(
    ctx: Messaging, principal: Principal, reply_id: str, body: QuickReplyUpdate
) -> QuickReply:
    row = await _unique(
        repo.update_for_account(
            ctx.pool, _reply_id(reply_id), principal.account_id, body.shortcut, body.body
        )
    )
    if row is None:
        raise NotFound("Quick reply not found", code="quick_reply_not_found")
    return _reply(row)


async def delete_reply(ctx: Messaging, principal: Principal, reply_id: str) -> None:
    if not await repo.delete_for_account(ctx.pool, _reply_id(reply_id), principal.account_id):
        raise NotFound("Quick reply not found", code="quick_reply_not_found")
