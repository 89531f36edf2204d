from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from clarin_common.auth import CurrentUser
from clarin_common.contract import Chat
from clarin_messaging.chats import service
from clarin_messaging.chats.schemas import ChatPage, MessagePage
from clarin_messaging.context import MessagingDep

router = APIRouter(prefix="/api/chats", tags=["chats"])

Limit = Annotated[int, Query(ge=1, le=200)]


@router.get("", response_model=ChatPage)
async def list_chats(
    user: CurrentUser,
    ctx: MessagingDep,
    device_id: uuid.UUID | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    unread: bool = False,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ChatPage:
    return await service.list_chats(
        ctx,
        user,
        device_id=str(device_id) if device_id else None,
        q=q,
        unread_only=unread,
        limit=limit,
        cursor=cursor,
    )


@router.get("/{chat_id}", response_model=Chat)
async def get_chat(chat_id: uuid.UUID, user: CurrentUser, ctx: MessagingDep) -> Chat:
    return await service.get_chat(ctx, user, str(chat_id))


@router.get("/{chat_id}/messages", response_model=MessagePage)
async def list_messages(
    chat_id: uuid.UUID,
    user: CurrentUser,
    ctx: MessagingDep,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> MessagePage:
    return await service.list_messages(ctx, user, str(chat_id), limit=limit, cursor=cursor)


@router.post("/{chat_id}/read", status_code=204, response_class=Response)
async def mark_read(chat_id: uuid.UUID, user: CurrentUser, ctx: MessagingDep) -> Response:
    await service.mark_read(ctx, user, str(chat_id))
    return Response(status_code=204)
