from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from clarin_common.auth import CurrentUser
from clarin_common.contract import Chat, ChatStatus
from clarin_common.users import AccountUsersDep
from clarin_messaging.chats import service
from clarin_messaging.chats.repository import ChatFilters
from clarin_messaging.chats.schemas import (
    LABEL_MAX,
    ChatPage,
    ChatPatch,
    LabelList,
    MessagePage,
    NoteRequest,
    UnreadCounts,
    normalize_label,
)
from clarin_messaging.convert import MessageOut
from clarin_messaging.deps import MessagingCtx
from clarin_messaging.messages import service as messages_service
from clarin_messaging.messages.schemas import TypingRequest

router = APIRouter(prefix="/api/chats", tags=["chats"])

Limit = Annotated[int, Query(ge=1, le=200)]


@router.get("", response_model=ChatPage)
async def list_chats(
    user: CurrentUser,
    ctx: MessagingCtx,
    device_id: uuid.UUID | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    unread: bool = False,
    status: ChatStatus | None = None,
    assigned_to: Annotated[
        str | None, Query(max_length=64, description="me, none or a user id")
    ] = None,
    label: Annotated[str | None, Query(max_length=LABEL_MAX)] = None,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ChatPage:
    filters = ChatFilters(
        device_id=str(device_id) if device_id else None,
        q=q.strip() if q and q.strip() else None,
        unread_only=unread,
        status=status,
        assigned_to=service.assignee_filter(user, assigned_to),
        label=normalize_label(label or "") or None,
    )
    return await service.list_chats(ctx, user, filters, limit=limit, cursor=cursor)


@router.get("/counts", response_model=UnreadCounts)
async def unread_counts(
    user: CurrentUser,
    ctx: MessagingCtx,
    device_id: uuid.UUID | None = None,
    status: ChatStatus | None = None,
) -> UnreadCounts:
    return await service.unread_counts(
        ctx, user, device_id=str(device_id) if device_id else None, status=status
    )


@router.get("/labels", response_model=LabelList)
async def list_labels(user: CurrentUser, ctx: MessagingCtx) -> LabelList:
    return await service.list_labels(ctx, user)


@router.get("/{chat_id}", response_model=Chat)
async def get_chat(chat_id: uuid.UUID, user: CurrentUser, ctx: MessagingCtx) -> Chat:
    return await service.get_chat(ctx, user, str(chat_id))


@router.patch("/{chat_id}", response_model=Chat)
async def update_chat(
    chat_id: uuid.UUID,
    patch: ChatPatch,
    user: CurrentUser,
    ctx: MessagingCtx,
    users: AccountUsersDep,
) -> Chat:
    return await service.update_chat(ctx, user, users, str(chat_id), patch)


@router.get("/{chat_id}/messages", response_model=MessagePage)
async def list_messages(
    chat_id: uuid.UUID,
    user: CurrentUser,
    ctx: MessagingCtx,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> MessagePage:
    return await service.list_messages(ctx, user, str(chat_id), limit=limit, cursor=cursor)


@router.post("/{chat_id}/notes", status_code=201, response_model=MessageOut)
async def add_note(
    chat_id: uuid.UUID, note: NoteRequest, user: CurrentUser, ctx: MessagingCtx
) -> MessageOut:
    return await service.add_note(ctx, user, str(chat_id), note)


@router.post("/{chat_id}/read", status_code=204, response_class=Response)
async def mark_read(chat_id: uuid.UUID, user: CurrentUser, ctx: MessagingCtx) -> Response:
    await service.mark_read(ctx, user, str(chat_id))
    return Response(status_code=204)


@router.post("/{chat_id}/typing", status_code=204, response_class=Response)
async def typing(
    chat_id: uuid.UUID, payload: TypingRequest, user: CurrentUser, ctx: MessagingCtx
) -> Response:
    """WhatsApp shows the agent typing (``composing``) or stops (``paused``)."""
    await messages_service.typing(ctx, user, str(chat_id), payload.state)
    return Response(status_code=204)
