from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Request, Response, UploadFile

from clarin_common.auth import CurrentUser
from clarin_common.errors import PayloadTooLarge, ValidationFailed
from clarin_messaging.convert import MessageOut
from clarin_messaging.deps import MessagingCtx
from clarin_messaging.messages import service
from clarin_messaging.messages.schemas import (
    BODY_MAX,
    CLIENT_ID_MAX,
    EditRequest,
    ReactRequest,
    SendTextRequest,
)

router = APIRouter(prefix="/api", tags=["messages"])

# served inline only when a browser cannot run them as a page of our origin
_INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "video/", "audio/")


@router.post("/messages/send", status_code=202, response_model=MessageOut)
async def send_text(
    payload: SendTextRequest, request: Request, user: CurrentUser, ctx: MessagingCtx
) -> MessageOut:
    target = await service.resolve_target(
        ctx,
        user,
        request.headers.get("authorization", ""),
        chat_id=payload.chat_id,
        device_id=payload.device_id,
        to=payload.to,
    )
    quote = await service.quote_for(ctx, user, target, payload.reply_to, "body")
    return await service.send_text(
        ctx, user, target, payload.body, payload.client_id, quote, payload.priority
    )


@router.post("/messages/send/media", status_code=202, response_model=MessageOut)
async def send_media(
    request: Request,
    user: CurrentUser,
    ctx: MessagingCtx,
    file: Annotated[UploadFile, File()],
    chat_id: Annotated[uuid.UUID | None, Form()] = None,
    device_id: Annotated[uuid.UUID | None, Form()] = None,
    to: Annotated[str | None, Form(min_length=1, max_length=320)] = None,
    caption: Annotated[str | None, Form(max_length=BODY_MAX)] = None,
    client_id: Annotated[str | None, Form(min_length=1, max_length=CLIENT_ID_MAX)] = None,
    reply_to: Annotated[uuid.UUID | None, Form()] = None,
) -> MessageOut:
    limit = ctx.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"Files are limited to {limit} bytes", details={"limit": limit})
    if not data:
        raise ValidationFailed.field(["body", "file"], "The file is empty")
    target = await service.resolve_target(
        ctx,
        user,
        request.headers.get("authorization", ""),
        chat_id=chat_id,
        device_id=device_id,
        to=to,
    )
    quote = await service.quote_for(ctx, user, target, reply_to, "body")
    upload = service.Upload(data=data, content_type=file.content_type, file_name=file.filename)
    return await service.send_media(ctx, user, target, upload, caption or None, client_id, quote)


@router.post("/messages/{message_id}/react", status_code=202, response_model=MessageOut)
async def react(
    message_id: uuid.UUID, payload: ReactRequest, user: CurrentUser, ctx: MessagingCtx
) -> MessageOut:
    return await service.react(ctx, user, str(message_id), payload.emoji)


@router.patch("/messages/{message_id}", response_model=MessageOut)
async def edit(
    message_id: uuid.UUID, payload: EditRequest, user: CurrentUser, ctx: MessagingCtx
) -> MessageOut:
    return await service.edit(ctx, user, str(message_id), payload.body)


@router.post("/messages/{message_id}/revoke", status_code=202, response_model=MessageOut)
async def revoke(message_id: uuid.UUID, user: CurrentUser, ctx: MessagingCtx) -> MessageOut:
    return await service.revoke(ctx, user, str(message_id))


@router.post("/media/{message_id}/retry", status_code=202, response_model=MessageOut)
async def retry_media(message_id: uuid.UUID, user: CurrentUser, ctx: MessagingCtx) -> MessageOut:
    return await service.retry_media(ctx, user, str(message_id))


@router.get("/media/{message_id}", response_class=Response)
async def download_media(message_id: uuid.UUID, user: CurrentUser, ctx: MessagingCtx) -> Response:
    media = await service.get_media(ctx, user, str(message_id))
    disposition = "inline" if media.mime_type.startswith(_INLINE_TYPES) else "attachment"
    name = media.file_name or f"{message_id}"
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return Response(
        content=media.data,
        media_type=media.mime_type,
        headers={
            "Content-Disposition": (
                f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
            ),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=86400",
        },
    )
