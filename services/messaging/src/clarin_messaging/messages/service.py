"""Sending text and media, and serving media files.

A send is queued durably and answered at once: the message is stored
``pending`` and, in the same transaction, its send command is written to the
outbox for ``wa.out.{device_id}.{priority}`` (stream ``WA_OUTBOX``, a work
queue). After the commit it is published (or, if that fails or the process
dies, relayed later); the worker that holds the device takes it in order, at
the device's pace, and reports ``sent`` or ``failed`` on ``WA_EVENTS``, which
settles the message. The message id is the send's idempotency key all the
way (``Nats-Msg-Id`` in the queue, the worker's record of sends done).
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from clarin_common.auth import Principal
from clarin_common.contract import MessageType
from clarin_common.db import transaction
from clarin_common.errors import (
    DeviceNotConnected,
    ServiceUnavailable,
    ValidationFailed,
)
from clarin_common.events import (
    MESSAGING_SEND_SUBJECT,
    CommandReply,
    EditCommand,
    MediaRef,
    MessageRef,
    ReactCommand,
    RetryMediaCommand,
    RevokeCommand,
    SendCommand,
    SendMediaCommand,
    SendPriority,
    SendTextCommand,
    ServiceSendRequest,
    TypingCommand,
    TypingState,
    WaEdit,
    WaReaction,
    WaRevoke,
    outbound_envelope,
    utcnow,
    wa_outbox_subject,
)
from clarin_common.ids import chat_id_for, jid_from_recipient, phone_from_jid
from clarin_common.outage import NatsOutage, is_outage
from clarin_common.outbox import stage_events
from clarin_messaging import app_events
from clarin_messaging.chats import repository as chats_repo
from clarin_messaging.chats.exceptions import ChatNotFound
from clarin_messaging.convert import MessageOut, chat_from_row, message_from_row, preview
from clarin_messaging.deps import MessagingContext
from clarin_messaging.ingest import conversation
from clarin_messaging.ingest.service import delete_stored_media
from clarin_messaging.media_store import media_key
from clarin_messaging.messages import repository as repo
from clarin_messaging.messages.exceptions import (
    EditWindowPassed,
    MediaFailed,
    MediaNotAvailable,
    MediaNotFound,
    MediaNotRetryable,
    MediaPending,
    MediaTooLarge,
    MessageDeleted,
    MessageNotEditable,
    MessageNotFound,
    MessageNotRevocable,
    MessageNotSent,
    QuotedDeleted,
    QuotedNotFound,
    WhatsAppRefused,
)
from clarin_messaging.messages.repository import NewMedia, NewMessage

log = structlog.get_logger(__name__)

# WhatsApp lets a message be edited for 15 minutes after it was sent
EDIT_WINDOW = timedelta(minutes=15)


@dataclass
class Target:
    chat_id: str
    device_id: str
    jid: str


@dataclass
class Quote:
    """The message a send answers: how WhatsApp is told, and its preview."""

    ref: MessageRef

    def apply(self, message: NewMessage) -> None:
        message.reply_to_wa_id = self.ref.wa_message_id
        message.quoted_body = self.ref.body
        message.quoted_type = self.ref.type
        message.quoted_sender_jid = self.ref.sender_jid
        message.quoted_from_me = self.ref.from_me


@dataclass
class Upload:
    data: bytes
    content_type: str | None
    file_name: str | None


@dataclass
class MediaFile:
    data: bytes
    mime_type: str
    file_name: str | None


class _ClientIdTaken(Exception):
    pass


def _check_target_fields(
    chat_id: uuid.UUID | None, device_id: uuid.UUID | None, to: str | None, where: str
) -> None:
    details: list[dict[str, Any]] = []
    if chat_id is not None:
        for name, value in (("device_id", device_id), ("to", to)):
            if value is not None:
                details.append(
                    {
                        "loc": [where, name],
                        "msg": "Give either chat_id, or device_id and to, not both",
                        "type": "value_error",
                    }
                )
    else:
        for name, value in (("device_id", device_id), ("to", to)):
            if value is None:
                details.append(
                    {
                        "loc": [where, name],
                        "msg": "Field required when chat_id is not given",
                        "type": "missing",
                    }
                )
    if details:
        raise ValidationFailed(details=details)


async def resolve_target(
    ctx: MessagingContext,
    principal: Principal,
    authorization: str,
    *,
    chat_id: uuid.UUID | None,
    device_id: uuid.UUID | None,
    to: str | None,
    where: str = "body",
) -> Target:
    _check_target_fields(chat_id, device_id, to, where)
    if chat_id is not None:
        chat = await chats_repo.get_by_id_for_account(ctx.pool, str(chat_id), principal.account_id)
        if chat is None:
            raise ChatNotFound()
        return Target(chat_id=chat.id, device_id=chat.device_id, jid=chat.jid)
    assert device_id is not None and to is not None
    try:
        jid = jid_from_recipient(to)
    except ValueError as exc:
        raise ValidationFailed.field([where, "to"], str(exc)) from exc
    await ctx.devices.ensure_owned(str(device_id), authorization)
    return Target(chat_id=chat_id_for(str(device_id), jid), device_id=str(device_id), jid=jid)


async def _existing(
    ctx: MessagingContext, principal: Principal, client_id: str | None
) -> MessageOut | None:
    if client_id is None:
        return None
    row = await repo.get_by_client_id(ctx.pool, client_id, principal.account_id)
    return message_from_row(row) if row is not None else None


async def _create_pending(
    ctx: MessagingContext,
    principal: Principal,
    target: Target,
    message: NewMessage,
    media: NewMedia | None,
    command: SendCommand,
    priority: SendPriority,
) -> MessageOut:
    """Store the pending message (creating its chat if needed) with its send
    queued in the same transaction; publish both after the commit (the outbox)."""
    group = target.jid.endswith("@g.us")
    async with ctx.pool.acquire() as conn, conn.transaction():
        if not await repo.insert_one(conn, message):
            raise _ClientIdTaken
        if media is not None:
            await repo.insert_media_many(conn, [media])
        chat_rows = await chats_repo.upsert_many(
            conn,
            [
                chats_repo.ChatUpsert(
                    id=target.chat_id,
                    account_id=principal.account_id,
                    device_id=target.device_id,
                    jid=target.jid,
                    phone=None if group else phone_from_jid(target.jid),
                    is_group=group,
                    name=None,
                    preview=preview(message.type, message.body),
                    last_at=message.sent_at,
                    unread=0,
                )
            ],
        )
        row = await repo.get_by_id_for_account(conn, message.id, principal.account_id)
        assert row is not None
        stored = message_from_row(row)
        # the send first: one publish keeps the order
        events = await stage_events(
            conn,
            [
                (
                    wa_outbox_subject(target.device_id, priority),
                    outbound_envelope(principal.account_id, target.device_id, command),
                ),
                app_events.new_message(principal.account_id, stored, chat_from_row(chat_rows[0])),
            ],
        )
    await ctx.outbox.publish(events)
    return stored


def _new_message(
    principal: Principal,
    target: Target,
    *,
    type_: str,
    body: str | None,
    client_id: str | None,
    message_id: str | None = None,
) -> NewMessage:
    return NewMessage(
        id=message_id or str(uuid.uuid4()),
        account_id=principal.account_id,
        chat_id=target.chat_id,
        device_id=target.device_id,
        wa_message_id=None,
        direction="out",
        type=type_,
        body=body,
        status="pending",
        sender_jid=None,
        sender_name=None,
        sent_at=utcnow(),
        client_id=client_id,
    )


async def quote_for(
    ctx: MessagingContext,
    principal: Principal,
    target: Target,
    reply_to: uuid.UUID | None,
    where: str,
) -> Quote | None:
    """``reply_to`` must be a message of the caller's account (404) in the chat
    the send goes to (422), not deleted (409), that reached WhatsApp (422)."""
    if reply_to is None:
        return None
    row = await repo.get_by_id_for_account(ctx.pool, str(reply_to), principal.account_id)
    if row is None:
        raise QuotedNotFound()
    if str(row["chat_id"]) != target.chat_id:
        raise ValidationFailed.field([where, "reply_to"], "Reply to a message of the same chat")
    if row["deleted_at"] is not None:
        raise QuotedDeleted()
    if not row["wa_message_id"] or row["direction"] == "note":
        raise ValidationFailed.field(
            [where, "reply_to"], "Only a message that reached WhatsApp can be quoted"
        )
    from_me = row["direction"] == "out"
    return Quote(
        MessageRef(
            wa_message_id=row["wa_message_id"],
            from_me=from_me,
            sender_jid=None if from_me else (row["sender_jid"] or target.jid),
            body=row["body"],
            type=row["type"],
        )
    )


async def send_text(
    ctx: MessagingContext,
    principal: Principal,
    target: Target,
    body: str,
    client_id: str | None,
    quote: Quote | None = None,
    priority: SendPriority = "interactive",
    message_id: str | None = None,
) -> MessageOut:
    existing = await _existing(ctx, principal, client_id)
    if existing is not None:
        return existing
    new = _new_message(
        principal, target, type_="text", body=body, client_id=client_id, message_id=message_id
    )
    if quote is not None:
        quote.apply(new)
    command = SendTextCommand(
        message_id=new.id,
        client_id=client_id,
        to=target.jid,
        body=body,
        reply_to=quote.ref if quote is not None else None,
    )
    try:
        return await _create_pending(ctx, principal, target, new, None, command, priority)
    except _ClientIdTaken:
        # the same client_id raced in from another request: that one is the message
        again = await _existing(ctx, principal, client_id)
        assert again is not None
        return again


def media_type_for(content_type: str) -> MessageType:
    major = content_type.split("/", 1)[0].lower()
    if major == "image":
        return "image"
    if major == "video":
        return "video"
    if major == "audio":
        return "audio"
    return "document"


def _content_type(upload: Upload) -> str:
    declared = (upload.content_type or "").split(";", 1)[0].strip().lower()
    if declared and declared != "application/octet-stream":
        return declared
    guessed, _ = mimetypes.guess_type(upload.file_name or "")
    return guessed or "application/octet-stream"


async def send_media(
    ctx: MessagingContext,
    principal: Principal,
    target: Target,
    upload: Upload,
    caption: str | None,
    client_id: str | None,
    quote: Quote | None = None,
) -> MessageOut:
    existing = await _existing(ctx, principal, client_id)
    if existing is not None:
        return existing
    mime_type = _content_type(upload)
    type_ = media_type_for(mime_type)
    new = _new_message(principal, target, type_=type_, body=caption, client_id=client_id)
    if quote is not None:
        quote.apply(new)
    key = media_key(principal.account_id, new.id)
    sha256 = hashlib.sha256(upload.data).hexdigest()
    object_key = f"out/{new.id}"
    await ctx.store.put(key, upload.data)
    objects = ctx.objects
    await objects.put(object_key, upload.data)
    media = NewMedia(
        message_id=new.id,
        account_id=principal.account_id,
        storage_key=key,
        mime_type=mime_type,
        file_name=upload.file_name,
        size=len(upload.data),
        sha256=sha256,
    )
    command = SendMediaCommand(
        message_id=new.id,
        client_id=client_id,
        to=target.jid,
        media_type=type_,
        media=MediaRef(
            object_key=object_key,
            mime_type=mime_type,
            file_name=upload.file_name,
            size=len(upload.data),
            sha256=sha256,
        ),
        caption=caption,
        reply_to=quote.ref if quote is not None else None,
    )
    try:
        return await _create_pending(ctx, principal, target, new, media, command, "interactive")
    except _ClientIdTaken:
        await _discard_bytes(ctx, key, object_key)
        again = await _existing(ctx, principal, client_id)
        assert again is not None
        return again


async def _discard_bytes(ctx: MessagingContext, key: str, object_key: str) -> None:
    await ctx.store.delete(key)
    try:
        await ctx.objects.delete(object_key)
    except Exception as exc:  # it expires on its own
        log.info("media_object_not_deleted", object_key=object_key, error=str(exc))


async def get_media(ctx: MessagingContext, principal: Principal, message_id: str) -> MediaFile:
    row = await repo.get_media_for_account(ctx.pool, message_id, principal.account_id)
    if row is None:
        raise MediaNotFound()
    if row["status"] == "pending":
        raise MediaPending()
    if row["status"] == "too_large":
        raise MediaTooLarge(row["error"])
    if row["status"] == "failed":
        hint = " Retry it with POST /api/media/{id}/retry." if row["retryable"] else ""
        raise MediaFailed(
            f"The file could not be downloaded: {row['error'] or 'unknown error'}.{hint}",
            details={"error": row["error"], "retryable": row["retryable"]},
        )
    data = await ctx.store.get(row["storage_key"]) if row["storage_key"] else None
    if data is None:
        raise MediaNotAvailable()
    return MediaFile(data=data, mime_type=row["mime_type"], file_name=row["file_name"])


async def retry_media(ctx: MessagingContext, principal: Principal, message_id: str) -> MessageOut:
    """Ask the device's worker to fetch a failed file again: the media goes back
    to ``pending`` and a later ``media`` event settles it."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        message = await repo.get_by_id_for_account(conn, message_id, principal.account_id)
        if message is None or message["media_mime_type"] is None:
            raise MediaNotFound()
        started = await repo.start_media_retry(
            conn, message_id, principal.account_id, ctx.settings.media_stale_seconds
        )
    if started is None:
        raise MediaNotRetryable(
            "Only a failed or stalled download can be retried (this one is "
            f"{message['media_status'].replace('_', ' ')})",
            details={"status": message["media_status"]},
        )
    device_id = str(message["device_id"])
    command = RetryMediaCommand(
        wa_message_id=message["wa_message_id"] or "",
        chat_jid=started["wa_chat_jid"] or "",
        mime_type=started["mime_type"],
        download=started["download"],
    )
    previous = started["previous_error"]
    try:
        reply = await ctx.commands.request(device_id, command)
    except (DeviceNotConnected, ServiceUnavailable):
        # no worker holds the device, or it did not answer in time (an outcome
        # that still comes moves failed forward just as well)
        await _undo_retry(ctx, principal, message_id, previous, True)
        raise
    if not reply.ok:
        error = reply.error or {}
        code = error.get("code") or "retry_refused"
        if code == "device_not_connected":
            await _undo_retry(ctx, principal, message_id, previous, True)
            raise DeviceNotConnected(details={"device_id": device_id})
        reason = error.get("message") or "WhatsApp refused to send the file again"
        # WhatsApp no longer has the file: a failure that is final; any other
        # refusal (a driver that cannot retry yet, a timeout) leaves it retryable
        final = code == "media_gone"
        await _undo_retry(ctx, principal, message_id, reason if final else previous, not final)
        raise MediaNotRetryable(reason, details={"reason": code})
    async with transaction(ctx.pool) as conn:
        row = await repo.get_by_id_for_account(conn, message_id, principal.account_id)
        assert row is not None
        current = message_from_row(row)
        events = await stage_events(
            conn, [app_events.message_updated(principal.account_id, current)]
        )
    await ctx.outbox.publish(events)
    return current


async def _undo_retry(
    ctx: MessagingContext,
    principal: Principal,
    message_id: str,
    error: str | None,
    retryable: bool,
) -> None:
    async with transaction(ctx.pool) as conn:
        await repo.undo_media_retry(conn, message_id, principal.account_id, error, retryable)
        row = await repo.get_by_id_for_account(conn, message_id, principal.account_id)
        # announced when the state the user sees changed: failed for good
        events = await stage_events(
            conn,
            [app_events.message_updated(principal.account_id, message_from_row(row))]
            if not retryable and row is not None
            else [],
        )
    await ctx.outbox.publish(events)


# ---- reactions, edits, deletes for everyone, typing ----------------------------------


async def _ask_worker(ctx: MessagingContext, device_id: str, command: BaseModel) -> dict[str, Any]:
    """A command the owning worker must answer; its ``result`` or the reason why not
    (a refusal of WhatsApp is 409 ``whatsapp_refused``)."""
    reply = await ctx.commands.request(device_id, command)
    if not reply.ok:
        error = reply.error or {}
        code = error.get("code") or "refused"
        if code == "device_not_connected":
            raise DeviceNotConnected(details={"device_id": device_id})
        raise WhatsAppRefused(error.get("message"), details={"reason": code})
    return reply.result or {}


def _accepted_at(result: dict[str, Any]) -> tuple[str | None, datetime]:
    wa_id = result.get("wa_message_id")
    try:
        at = datetime.fromisoformat(str(result["sent_at"]))
    except (KeyError, ValueError):
        at = utcnow()
    return (str(wa_id) if wa_id else None), at


async def _on_whatsapp(
    ctx: MessagingContext, principal: Principal, message_id: str
) -> tuple[MessageOut, str]:
    """A message of the caller's account that reached WhatsApp and is not
    deleted, with its chat's JID."""
    row = await repo.get_by_id_for_account(ctx.pool, message_id, principal.account_id)
    if row is None:
        raise MessageNotFound()
    if row["deleted_at"] is not None:
        raise MessageDeleted()
    if not row["wa_message_id"] or row["direction"] == "note":
        raise MessageNotSent()
    chat = await chats_repo.get_by_id_for_account(
        ctx.pool, str(row["chat_id"]), principal.account_id
    )
    if chat is None:  # pragma: no cover - a message always has its chat
        raise MessageNotFound()
    return message_from_row(row), chat.jid


async def _apply_confirmed(
    ctx: MessagingContext, principal: Principal, message_id: str, update: conversation.Update
) -> MessageOut:
    """WhatsApp accepted it: the store reflects it now (the worker's event of
    the same change, later, finds nothing to do)."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        applied = await conversation.apply(conn, [update])
        row = await repo.get_by_id_for_account(conn, message_id, principal.account_id)
        chats = await conversation.chat_rows(conn, applied.chats)
        assert row is not None
        current = message_from_row(row)
        events = await stage_events(
            conn,
            [
                app_events.message_updated(principal.account_id, current),
                *(app_events.chat_updated(principal.account_id, chat_from_row(c)) for c in chats),
            ]
            if applied.changed
            else [],
        )
    await ctx.outbox.publish(events)
    await delete_stored_media(ctx, applied.storage_keys)
    return current


async def react(
    ctx: MessagingContext, principal: Principal, message_id: str, emoji: str
) -> MessageOut:
    message, chat_jid = await _on_whatsapp(ctx, principal, message_id)
    assert message.wa_message_id is not None
    from_me = message.direction == "out"
    target = MessageRef(
        wa_message_id=message.wa_message_id,
        from_me=from_me,
        sender_jid=None if from_me else (message.sender_jid or chat_jid),
    )
    result = await _ask_worker(
        ctx,
        message.device_id,
        ReactCommand(message_id=message.id, chat_jid=chat_jid, target=target, emoji=emoji),
    )
    reaction_id, at = _accepted_at(result)
    event = WaReaction(
        wa_message_id=message.wa_message_id,
        chat_jid=chat_jid,
        from_me=True,
        emoji=emoji,
        reacted_at=at,
        reaction_id=reaction_id,
        message_id=message.id,
    )
    update = conversation.Update("reaction", principal.account_id, message.device_id, event)
    return await _apply_confirmed(ctx, principal, message.id, update)


async def edit(
    ctx: MessagingContext, principal: Principal, message_id: str, body: str
) -> MessageOut:
    message, chat_jid = await _on_whatsapp(ctx, principal, message_id)
    assert message.wa_message_id is not None
    if message.direction != "out" or message.type != "text":
        raise MessageNotEditable()
    if utcnow() - message.sent_at > EDIT_WINDOW:
        raise EditWindowPassed()
    result = await _ask_worker(
        ctx,
        message.device_id,
        EditCommand(
            message_id=message.id,
            chat_jid=chat_jid,
            wa_message_id=message.wa_message_id,
            body=body,
        ),
    )
    edit_id, at = _accepted_at(result)
    event = WaEdit(
        wa_message_id=message.wa_message_id,
        chat_jid=chat_jid,
        from_me=True,
        body=body,
        edited_at=at,
        edit_id=edit_id,
        message_id=message.id,
    )
    update = conversation.Update("edit", principal.account_id, message.device_id, event)
    return await _apply_confirmed(ctx, principal, message.id, update)


async def revoke(ctx: MessagingContext, principal: Principal, message_id: str) -> MessageOut:
    message, chat_jid = await _on_whatsapp(ctx, principal, message_id)
    assert message.wa_message_id is not None
    if message.direction != "out":
        raise MessageNotRevocable()
    result = await _ask_worker(
        ctx,
        message.device_id,
        RevokeCommand(
            message_id=message.id, chat_jid=chat_jid, wa_message_id=message.wa_message_id
        ),
    )
    revoke_id, at = _accepted_at(result)
    event = WaRevoke(
        wa_message_id=message.wa_message_id,
        chat_jid=chat_jid,
        from_me=True,
        revoked_at=at,
        revoke_id=revoke_id,
        message_id=message.id,
    )
    update = conversation.Update("revoke", principal.account_id, message.device_id, event)
    return await _apply_confirmed(ctx, principal, message.id, update)


async def typing(
    ctx: MessagingContext, principal: Principal, chat_id: str, state: TypingState
) -> None:
    chat = await chats_repo.get_by_id_for_account(ctx.pool, chat_id, principal.account_id)
    if chat is None:
        raise ChatNotFound()
    await _ask_worker(ctx, chat.device_id, TypingCommand(chat_jid=chat.jid, state=state))


async def send_for_service(ctx: MessagingContext, request: ServiceSendRequest) -> MessageOut:
    """A send another service asks for (campaigns): the same path as the API's,
    for an account and device that service already checked."""
    try:
        jid = jid_from_recipient(request.to)
    except ValueError as exc:
        raise ValidationFailed.field(["to"], str(exc)) from exc
    principal = Principal(
        user_id="", account_id=request.account_id, role="admin", token_id="service"
    )
    target = Target(
        chat_id=chat_id_for(request.device_id, jid), device_id=request.device_id, jid=jid
    )
    message_id = str(uuid.UUID(request.message_id)) if request.message_id else None
    return await send_text(
        ctx,
        principal,
        target,
        request.body,
        request.client_id,
        priority=request.priority,
        message_id=message_id,
    )


class ServiceSends:
    """Answers ``svc.messaging.send`` (one queue group across replicas)."""

    def __init__(self, ctx: MessagingContext) -> None:
        self.ctx = ctx
        self._sub: Any = None
        # a send that fails because NATS is away: said once, not a traceback per send
        self.outage = NatsOutage("messaging:service_sends")

    async def start(self) -> None:
        self._sub = await self.ctx.nc.subscribe(
            MESSAGING_SEND_SUBJECT, queue="messaging", cb=self._handle
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _handle(self, msg: Msg) -> None:
        try:
            request = ServiceSendRequest.model_validate_json(msg.data)
            message = await send_for_service(self.ctx, request)
            reply = CommandReply(
                ok=True, result={"message_id": message.id, "status": message.status}
            )
            self.outage.ok()
        except (ValidationError, ValidationFailed, ValueError) as exc:
            reply = CommandReply(
                ok=False, error={"code": "invalid_send", "message": str(exc)[:300]}
            )
        except Exception as exc:
            if is_outage(exc):
                self.outage.failed(exc)
            else:
                log.exception("service_send_failed")
            reply = CommandReply(
                ok=False, error={"code": "internal_error", "message": type(exc).__name__}
            )
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(reply.model_dump_json().encode())
