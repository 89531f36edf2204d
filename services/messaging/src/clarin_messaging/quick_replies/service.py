"""Quick replies: saved answers an agent inserts with ``/shortcut``."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg

from clarin_common.auth import Principal
from clarin_messaging.deps import MessagingContext
from clarin_messaging.quick_replies import repository as repo
from clarin_messaging.quick_replies.exceptions import QuickReplyNotFound, ShortcutTaken
from clarin_messaging.quick_replies.schemas import (
    QuickReply,
    QuickReplyCreate,
    QuickReplyList,
    QuickReplyUpdate,
)

T = TypeVar("T")


async def _unique(write: Awaitable[T]) -> T:
    try:
        return await write
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == repo.SHORTCUT_UNIQUE:
            raise ShortcutTaken() from exc
        raise


async def list_replies(ctx: MessagingContext, principal: Principal) -> QuickReplyList:
    return QuickReplyList(items=await repo.list_for_account(ctx.pool, principal.account_id))


async def create_reply(
    ctx: MessagingContext, principal: Principal, body: QuickReplyCreate
) -> QuickReply:
    return await _unique(
        repo.insert(ctx.pool, str(uuid.uuid4()), principal.account_id, body.shortcut, body.body)
    )


def _reply_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise QuickReplyNotFound() from exc


async def update_reply(
    ctx: MessagingContext, principal: Principal, reply_id: str, body: QuickReplyUpdate
) -> QuickReply:
    reply = await _unique(
        repo.update_for_account(
            ctx.pool, _reply_id(reply_id), principal.account_id, body.shortcut, body.body
        )
    )
    if reply is None:
        raise QuickReplyNotFound()
    return reply


async def delete_reply(ctx: MessagingContext, principal: Principal, reply_id: str) -> None:
    if not await repo.delete_for_account(ctx.pool, _reply_id(reply_id), principal.account_id):
        raise QuickReplyNotFound()
