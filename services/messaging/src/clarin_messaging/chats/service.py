"""Chats: the inbox list, one chat, its messages, mark read."""

from __future__ import annotations

from collections import defaultdict

import asyncpg
import structlog
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from clarin_common.auth import Principal
from clarin_common.contract import Chat
from clarin_common.errors import NotFound
from clarin_common.events import MarkReadCommand, wa_command_subject
from clarin_common.nats import request_json
from clarin_messaging import app_events
from clarin_messaging.chats import repository as repo
from clarin_messaging.chats.schemas import ChatPage, MessagePage
from clarin_messaging.context import Messaging
from clarin_messaging.convert import chat_from_row, message_from_row
from clarin_messaging.messages import repository as messages_repo
from clarin_messaging.pagination import decode_cursor, encode_cursor

log = structlog.get_logger(__name__)

_READ_IDS_PER_COMMAND = 200


async def list_chats(
    ctx: Messaging,
    principal: Principal,
    *,
    device_id: str | None,
    q: str | None,
    unread_only: bool,
    limit: int,
    cursor: str | None,
) -> ChatPage:
    after = decode_cursor(cursor) if cursor else None
    rows = await repo.list_for_account(
        ctx.pool,
        principal.account_id,
        device_id=device_id,
        q=q.strip() if q and q.strip() else None,
        unread_only=unread_only,
        after=after,
        limit=limit + 1,
    )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1]["activity_at"], page[-1]["id"]) if more else None
    return ChatPage(items=[chat_from_row(r) for r in page], next_cursor=next_cursor)


async def get_chat_row(ctx: Messaging, principal: Principal, chat_id: str) -> asyncpg.Record:
    row = await repo.get_by_id_for_account(ctx.pool, chat_id, principal.account_id)
    if row is None:
        raise NotFound("Chat not found", code="chat_not_found")
    return row


async def get_chat(ctx: Messaging, principal: Principal, chat_id: str) -> Chat:
    return chat_from_row(await get_chat_row(ctx, principal, chat_id))


async def list_messages(
    ctx: Messaging, principal: Principal, chat_id: str, *, limit: int, cursor: str | None
) -> MessagePage:
    after = decode_cursor(cursor) if cursor else None
    await get_chat_row(ctx, principal, chat_id)
    rows = await messages_repo.list_for_chat(
        ctx.pool, chat_id, principal.account_id, after=after, limit=limit + 1
    )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1]["sent_at"], page[-1]["id"]) if more else None
    return MessagePage(items=[message_from_row(r) for r in page], next_cursor=next_cursor)


async def mark_read(ctx: Messaging, principal: Principal, chat_id: str) -> None:
    """Unread goes to 0 whatever the device's state; read receipts go to WhatsApp
    through the owning worker when it is there."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        chat = await repo.get_by_id_for_account(conn, chat_id, principal.account_id)
        if chat is None:
            raise NotFound("Chat not found", code="chat_not_found")
        read = await repo.mark_read(conn, chat_id, principal.account_id)
    device_id = str(chat["device_id"])
    await ctx.publish([app_events.chat_read(principal.account_id, chat_id, device_id=device_id)])

    by_sender: dict[str | None, list[str]] = defaultdict(list)
    for row in read:
        if row["wa_message_id"]:
            by_sender[row["sender_jid"]].append(row["wa_message_id"])
    for sender_jid, wa_ids in by_sender.items():
        for start in range(0, len(wa_ids), _READ_IDS_PER_COMMAND):
            command = MarkReadCommand(
                chat_jid=chat["jid"],
                sender_jid=sender_jid,
                wa_message_ids=wa_ids[start : start + _READ_IDS_PER_COMMAND],
            )
            try:
                await request_json(
                    ctx.nc,
                    wa_command_subject(device_id),
                    command,
                    timeout=ctx.settings.mark_read_timeout,
                )
            except (NoRespondersError, NatsTimeoutError) as exc:
                # the chat is read here anyway; WhatsApp just will not show blue ticks
                log.info("read_receipts_not_sent", chat_id=chat_id, reason=type(exc).__name__)
                return
