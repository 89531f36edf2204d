"""Chats: the inbox list, one chat, its messages, mark read; chats as
conversations (status, assignee, labels) and private notes."""

from __future__ import annotations

import uuid
from collections import defaultdict

import structlog

from clarin_common.auth import Principal
from clarin_common.contract import Chat
from clarin_common.errors import DeviceNotConnected, ServiceUnavailable, ValidationFailed
from clarin_common.events import MarkReadCommand, utcnow
from clarin_common.outbox import stage_events
from clarin_common.paging import Key, decode_cursor, page
from clarin_common.users import AccountUsers
from clarin_messaging import app_events
from clarin_messaging.chats import repository as repo
from clarin_messaging.chats.exceptions import ChatNotFound
from clarin_messaging.chats.repository import ChatFilters
from clarin_messaging.chats.schemas import (
    ChatPage,
    ChatPatch,
    LabelCount,
    LabelList,
    MessagePage,
    NoteRequest,
    UnreadCounts,
)
from clarin_messaging.convert import MessageOut, chat_from_row, message_from_row
from clarin_messaging.deps import MessagingContext
from clarin_messaging.messages import repository as messages_repo
from clarin_messaging.messages.repository import NewMessage

log = structlog.get_logger(__name__)

_READ_IDS_PER_COMMAND = 200


def assignee_filter(principal: Principal, value: str | None) -> str | None:
    """``assigned_to=me|none|{user_id}`` as a user id, ``repo.NONE`` or None."""
    if value is None or value == "":
        return None
    if value == "me":
        return principal.user_id
    if value == "none":
        return repo.NONE
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise ValidationFailed.field(["query", "assigned_to"], "Use me, none or a user id") from exc


async def list_chats(
    ctx: MessagingContext,
    principal: Principal,
    filters: ChatFilters,
    *,
    limit: int,
    cursor: str | None,
) -> ChatPage:
    after = decode_cursor(cursor) if cursor else None
    rows = await repo.list_for_account(
        ctx.pool, principal.account_id, filters, after=after, limit=limit + 1
    )
    items, next_cursor = page(rows, limit, lambda r: Key(r["activity_at"], str(r["id"])))
    return ChatPage(items=[chat_from_row(r) for r in items], next_cursor=next_cursor)


async def unread_counts(
    ctx: MessagingContext, principal: Principal, *, device_id: str | None, status: str | None
) -> UnreadCounts:
    row = await repo.unread_counts(
        ctx.pool, principal.account_id, principal.user_id, device_id=device_id, status=status
    )
    return UnreadCounts(all=row["all"], mine=row["mine"], unassigned=row["unassigned"])


async def list_labels(ctx: MessagingContext, principal: Principal) -> LabelList:
    rows = await repo.labels_for_account(ctx.pool, principal.account_id)
    return LabelList(items=[LabelCount(label=r["label"], chats=r["chats"]) for r in rows])


async def get_chat(ctx: MessagingContext, principal: Principal, chat_id: str) -> Chat:
    chat = await repo.get_by_id_for_account(ctx.pool, chat_id, principal.account_id)
    if chat is None:
        raise ChatNotFound()
    return chat


async def list_messages(
    ctx: MessagingContext, principal: Principal, chat_id: str, *, limit: int, cursor: str | None
) -> MessagePage:
    after = decode_cursor(cursor) if cursor else None
    await get_chat(ctx, principal, chat_id)
    rows = await messages_repo.list_for_chat(
        ctx.pool, chat_id, principal.account_id, after=after, limit=limit + 1
    )
    items, next_cursor = page(rows, limit, lambda r: Key(r["sent_at"], str(r["id"])))
    return MessagePage(items=[message_from_row(r) for r in items], next_cursor=next_cursor)


async def mark_read(ctx: MessagingContext, principal: Principal, chat_id: str) -> None:
    """Unread goes to 0 whatever the device's state; read receipts go to WhatsApp
    through the owning worker when it is there."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        chat = await repo.get_by_id_for_account(conn, chat_id, principal.account_id)
        if chat is None:
            raise ChatNotFound()
        read = await repo.mark_read(conn, chat_id, principal.account_id)
        device_id = chat.device_id
        events = await stage_events(
            conn, [app_events.chat_read(principal.account_id, chat_id, device_id=device_id)]
        )
    await ctx.outbox.publish(events)

    by_sender: dict[str | None, list[str]] = defaultdict(list)
    for row in read:
        if row["wa_message_id"]:
            by_sender[row["sender_jid"]].append(row["wa_message_id"])
    for sender_jid, wa_ids in by_sender.items():
        for start in range(0, len(wa_ids), _READ_IDS_PER_COMMAND):
            command = MarkReadCommand(
                chat_jid=chat.jid,
                sender_jid=sender_jid,
                wa_message_ids=wa_ids[start : start + _READ_IDS_PER_COMMAND],
            )
            try:
                # the worker's answer, a refusal included, changes nothing here
                await ctx.commands.request(
                    device_id, command, timeout=ctx.settings.mark_read_timeout
                )
            except (DeviceNotConnected, ServiceUnavailable) as exc:
                # the chat is read here anyway; WhatsApp just will not show blue ticks
                log.info("read_receipts_not_sent", chat_id=chat_id, reason=type(exc).__name__)
                return


async def update_chat(
    ctx: MessagingContext, principal: Principal, users: AccountUsers, chat_id: str, patch: ChatPatch
) -> Chat:
    """Status, assignee and labels; ``chat_updated`` goes out when something changed."""
    current = await get_chat(ctx, principal, chat_id)
    assignee = str(patch.assigned_to) if patch.assigned_to is not None else None
    # only a change of assignee asks auth: saving what is there never fails on it
    if (
        patch.given("assigned_to")
        and assignee is not None
        and assignee != current.assigned_to
        and not await users.is_member(assignee)
    ):
        raise ValidationFailed.field(["body", "assigned_to"], "Not a user of this account")
    async with ctx.pool.acquire() as conn, conn.transaction():
        before = await repo.lock_for_account(conn, chat_id, principal.account_id)
        if before is None:
            raise ChatNotFound()
        status = patch.status or before.status
        assigned_to = assignee if patch.given("assigned_to") else before.assigned_to
        labels = patch.labels if patch.labels is not None else before.labels
        if (status, assigned_to, labels) == (before.status, before.assigned_to, before.labels):
            return before
        updated = await repo.update_conversation(
            conn,
            chat_id,
            principal.account_id,
            status=status,
            assigned_to=assigned_to,
            labels=labels,
        )
        chat = updated
        events = await stage_events(conn, [app_events.chat_updated(principal.account_id, chat)])
    await ctx.outbox.publish(events)
    return chat


async def add_note(
    ctx: MessagingContext, principal: Principal, chat_id: str, note: NoteRequest
) -> MessageOut:
    """A private note in the chat's timeline: stored and announced to the
    account's sockets like a message, never handed to a device worker."""
    chat = await get_chat(ctx, principal, chat_id)
    if note.client_id is not None:
        existing = await messages_repo.get_by_client_id(
            ctx.pool, note.client_id, principal.account_id
        )
        if existing is not None and str(existing["chat_id"]) == chat_id:
            return message_from_row(existing)
    new = NewMessage(
        id=str(uuid.uuid4()),
        account_id=principal.account_id,
        chat_id=chat_id,
        device_id=chat.device_id,
        wa_message_id=None,
        direction="note",
        type="text",
        body=note.body,
        status="sent",
        sender_jid=None,
        sender_name=None,
        sent_at=utcnow(),
        client_id=note.client_id,
        author_id=principal.user_id,
    )
    async with ctx.pool.acquire() as conn, conn.transaction():
        inserted = await messages_repo.insert_one(conn, new)
        row = await (
            messages_repo.get_by_id_for_account(conn, new.id, principal.account_id)
            if inserted
            else messages_repo.get_by_client_id(conn, note.client_id or "", principal.account_id)
        )
        if row is None or str(row["chat_id"]) != chat_id:
            # the client_id belongs to a message of another chat
            raise ValidationFailed.field(["body", "client_id"], "client_id is already used")
        message = message_from_row(row)
        events = await stage_events(
            conn,
            [app_events.new_message(principal.account_id, message, chat)] if inserted else [],
        )
    await ctx.outbox.publish(events)
    return message
