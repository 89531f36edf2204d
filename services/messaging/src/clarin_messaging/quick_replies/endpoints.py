from __future__ import annotations

from fastapi import APIRouter, Response

from clarin_common.auth import CurrentUser
from clarin_messaging.deps import MessagingCtx
from clarin_messaging.quick_replies import service
from clarin_messaging.quick_replies.schemas import (
    QuickReply,
    QuickReplyCreate,
    QuickReplyList,
    QuickReplyUpdate,
)

router = APIRouter(prefix="/api/quick-replies", tags=["quick replies"])


@router.get("", response_model=QuickReplyList)
async def list_replies(user: CurrentUser, ctx: MessagingCtx) -> QuickReplyList:
    return await service.list_replies(ctx, user)


@router.post("", status_code=201, response_model=QuickReply)
async def create_reply(body: QuickReplyCreate, user: CurrentUser, ctx: MessagingCtx) -> QuickReply:
    return await service.create_reply(ctx, user, body)


@router.put("/{reply_id}", response_model=QuickReply)
async def update_reply(
    reply_id: str, body: QuickReplyUpdate, user: CurrentUser, ctx: MessagingCtx
) -> QuickReply:
    return await service.update_reply(ctx, user, reply_id, body)


@router.delete("/{reply_id}", status_code=204, response_class=Response)
async def delete_reply(reply_id: str, user: CurrentUser, ctx: MessagingCtx) -> Response:
    await service.delete_reply(ctx, user, reply_id)
    return Response(status_code=204)
