"""Persist WhatsApp events in batches: one transaction per batch, idempotent.

A batch of ``wa.evt.*.*.message|sent|receipt|media`` deliveries becomes a
handful of multi-row statements: resolve each contact to its one chat (a LID
and a phone number that turn out to be one person merge), insert the new
messages (whatever was seen before is left alone), their media index rows,
upsert their chats (counting unread only for messages actually inserted),
set resolved chats with a new inbound message back to open, settle outbound
messages from ``sent`` events and echoes, move statuses forward from receipts,
then settle media that arrived after its message (``media``).
Application events go out after the commit; the consumer acks after the
handler returns. Status posts (``status@broadcast``) are no conversation and
are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from nats.js.errors import NotFoundError as JsNotFoundError
from pydantic import ValidationError

from clarin_common.contract import Chat, Media, Message
from clarin_common.events import WaMedia, WaMessage, WaPresence, WaReceipt, WaSent
from clarin_common.ids import chat_id_for, normalize_jid, phone_from_jid
from clarin_common.nats import Delivery, PoisonMessage
from clarin_common.outbox import stage_events
from clarin_messaging import app_events
from clarin_messaging.chats import repository as chats_repo
from clarin_messaging.convert import chat_from_row, media_url, message_from_row, preview
from clarin_messaging.deps import MessagingContext
from clarin_messaging.ingest import conversation
from clarin_messaging.media_store import media_key
from clarin_messaging.messages import repository as messages_repo
from clarin_messaging.messages.repository import (
    STATUS_RANK,
    MediaOutcome,
    NewMedia,
    NewMessage,
    ReceiptUpdate,
    SentUpdate,
)

log = structlog.get_logger(__name__)

_MESSAGE_NAMESPACE = uuid.UUID("0b7d3c8e-5a4f-4f52-9a0e-3c1d2b6e7f81")
_MEDIA_COPY_CONCURRENCY = 8
STATUS_BROADCAST = "status@broadcast"
MEDIA_EXPIRED = "The file expired before it was stored; retry to fetch it again"


class MediaBeforeItsMessage(Exception):
    """A ``media`` event whose message is not stored yet (it failed in an
    earlier batch that is being retried): not poison, retried later."""


_MESSAGE_NAMESPACE_BYTES = _MESSAGE_NAMESPACE.bytes


def message_id_for(device_id: str, wa_message_id: str) -> str:
    """The id of a message first seen as an event: the same event always maps to
    the same row (and the same media file) however often it arrives.

    ``uuid.uuid5(_MESSAGE_NAMESPACE, f"{device_id}|{wa_message_id}")`` written out
    (SHA-1, version and variant bits) without building UUID objects: it runs
    once per inbound message.
    """
    digest = bytearray(
        hashlib.sha1(
            _MESSAGE_NAMESPACE_BYTES + f"{device_id}|{wa_message_id}".encode(),
            usedforsecurity=False,
        ).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.lru_cache(maxsize=65_536)
def _uuid(value: str | None, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError) as exc:
        raise PoisonMessage(f"{what} is not a UUID: {value!r}") from exc


# the same accounts, devices and chats come back batch after batch
_chat_id = functools.lru_cache(maxsize=131_072)(chat_id_for)


def _is_group(jid: str) -> bool:
    return jid.endswith("@g.us")


def _is_lid(jid: str) -> bool:
    return jid.endswith("@lid")


@dataclass
class _MediaJob:
    message_id: str
    account_id: str
    object_key: str
    mime_type: str
    file_name: str | None
    size: int
    sha256: str | None


@dataclass
class _Contact:
    """Where a message belongs: ``jid`` the chat address (phone form whenever
    known), ``lid`` the contact's LID when known."""

    jid: str
    lid: str | None


@dataclass
class _Parsed:
    messages: list[tuple[NewMessage, WaMessage]]
    media_jobs: list[_MediaJob]
    sents: dict[str, SentUpdate]
    receipts: dict[tuple[str, str], ReceiptUpdate]
    # per message id: its contact, settled by _resolve_chats
    contacts: dict[str, _Contact] = field(default_factory=dict)
    # (device, wa_message_id) → the latest media outcome of the batch
    media_outcomes: dict[tuple[str, str], tuple[str, WaMedia]] = field(default_factory=dict)
    # media announced by a message, its file still to come (``media_info``)
    announced: dict[str, NewMedia] = field(default_factory=dict)
    # edits, revokes and reactions, in the order they came
    updates: list[conversation.Update] = field(default_factory=list)
    # (account_id, device_id, presence)
    presences: list[tuple[str, str, WaPresence]] = field(default_factory=list)


def _parse(deliveries: list[Delivery]) -> _Parsed:
    parsed = _Parsed(messages=[], media_jobs=[], sents={}, receipts={})
    seen_messages: set[str] = set()
    for delivery in deliveries:
        env = delivery.envelope
        tokens = delivery.msg.subject.split(".")
        if len(tokens) != 5:
            raise PoisonMessage(f"unexpected subject {delivery.msg.subject}")
        _, _, subject_account, subject_device, kind = tokens
        account_id = _uuid(env.account_id, "account_id")
        device_id = _uuid(env.device_id, "device_id")
        if (subject_account, subject_device) != (env.account_id, env.device_id):
            raise PoisonMessage("envelope account/device differ from the subject")
        try:
            if kind == "message":
                wa = WaMessage.model_validate(env.data)
                _add_message(parsed, seen_messages, account_id, device_id, wa)
            elif kind == "sent":
                _add_sent(parsed, account_id, WaSent.model_validate(env.data))
            elif kind == "receipt":
                _add_receipt(parsed, account_id, device_id, WaReceipt.model_validate(env.data))
            elif kind == "media":
                media = WaMedia.model_validate(env.data)
                parsed.media_outcomes[(device_id, media.wa_message_id)] = (account_id, media)
            elif kind in ("edit", "revoke", "reaction"):
                update = conversation.update_from(kind, account_id, device_id, env.data)
                if normalize_jid(update.event.chat_jid) != STATUS_BROADCAST:
                    parsed.updates.append(update)
            elif kind == "presence":
                presence = WaPresence.model_validate(env.data)
                parsed.presences.append((account_id, device_id, presence))
            # other kinds (status, qr) are not ours: acked and ignored
        except ValidationError as exc:
            raise PoisonMessage(f"invalid {kind} data: {exc}") from exc
    return parsed


def _add_message(
    parsed: _Parsed, seen: set[str], account_id: str, device_id: str, wa: WaMessage
) -> None:
    jid = normalize_jid(wa.chat_jid)
    if jid == STATUS_BROADCAST:
        return  # a contact's status post: no chat, no unread (and no lead)
    own_id = None
    if wa.message_id:
        try:
            own_id = str(uuid.UUID(wa.message_id))
        except ValueError:
            own_id = None
    message_id = own_id or message_id_for(device_id, wa.wa_message_id)
    if own_id and wa.direction == "out":
        # the echo of a message sent from Clarin: it is at least `sent`
        _merge_sent(
            parsed,
            SentUpdate(own_id, account_id, "sent", wa.wa_message_id, None),
        )
    if message_id in seen:
        return
    seen.add(message_id)
    lid = normalize_jid(wa.chat_lid) if wa.chat_lid else (jid if _is_lid(jid) else None)
    if _is_lid(jid) and wa.direction == "in" and wa.sender_jid:
        # a one-to-one chat addressed by LID whose sender the worker resolved
        sender = normalize_jid(wa.sender_jid)
        if phone_from_jid(sender) is not None:
            jid, lid = sender, jid
    if (lid is not None and not _is_lid(lid)) or _is_group(jid):
        lid = None
    parsed.contacts[message_id] = _Contact(jid=jid, lid=lid)
    parsed.messages.append(
        (
            NewMessage(
                id=message_id,
                account_id=account_id,
                chat_id=_chat_id(device_id, jid),
                device_id=device_id,
                wa_message_id=wa.wa_message_id,
                direction=wa.direction,
                type=wa.type,
                body=wa.body,
                status="received" if wa.direction == "in" else "sent",
                sender_jid=wa.sender_jid,
                sender_name=wa.push_name,
                sent_at=wa.sent_at,
                client_id=wa.client_id if own_id else None,
                reply_to_wa_id=wa.reply_to.wa_message_id if wa.reply_to else None,
                quoted_body=wa.reply_to.body if wa.reply_to else None,
                quoted_type=wa.reply_to.type if wa.reply_to else None,
                quoted_sender_jid=wa.reply_to.sender_jid if wa.reply_to else None,
                quoted_from_me=wa.reply_to.from_me if wa.reply_to else False,
            ),
            wa,
        )
    )
    if wa.media is not None:
        parsed.media_jobs.append(
            _MediaJob(
                message_id=message_id,
                account_id=account_id,
                object_key=wa.media.object_key,
                mime_type=wa.media.mime_type,
                file_name=wa.media.file_name,
                size=wa.media.size,
                sha256=wa.media.sha256,
            )
        )
    elif wa.media_info is not None:
        parsed.announced[message_id] = NewMedia(
            message_id=message_id,
            account_id=account_id,
            storage_key=None,
            mime_type=wa.media_info.mime_type,
            file_name=wa.media_info.file_name,
            size=wa.media_info.size or 0,
            sha256=None,
            status="pending",
            download=wa.media_info.download,
            wa_chat_jid=wa.chat_jid,
        )


def _merge_sent(parsed: _Parsed, update: SentUpdate) -> None:
    current = parsed.sents.get(update.message_id)
    # acceptance wins over refusal; the first known wa_message_id is kept
    if current is None or (current.status == "failed" and update.status == "sent"):
        parsed.sents[update.message_id] = update
    elif current.wa_message_id is None and update.wa_message_id is not None:
        current.wa_message_id = update.wa_message_id


def _add_sent(parsed: _Parsed, account_id: str, sent: WaSent) -> None:
    try:
        message_id = str(uuid.UUID(sent.message_id))
    except ValueError as exc:
        raise PoisonMessage(f"message_id is not a UUID: {sent.message_id!r}") from exc
    _merge_sent(
        parsed, SentUpdate(message_id, account_id, sent.status, sent.wa_message_id, sent.error)
    )


def _add_receipt(parsed: _Parsed, account_id: str, device_id: str, receipt: WaReceipt) -> None:
    status = "read" if receipt.status == "played" else receipt.status
    for wa_id in receipt.wa_message_ids:
        key = (device_id, wa_id)
        current = parsed.receipts.get(key)
        if current is None or STATUS_RANK[current.status] < STATUS_RANK[status]:
            parsed.receipts[key] = ReceiptUpdate(account_id, device_id, wa_id, status)


async def _copy_media(ctx: MessagingContext, jobs: list[_MediaJob]) -> dict[str, NewMedia]:
    """Copy media bytes from the ``wa_media`` object store into our media store
    (before the transaction, so a committed row never points at missing bytes)."""
    if not jobs:
        return {}
    objects = ctx.objects
    limit = asyncio.Semaphore(_MEDIA_COPY_CONCURRENCY)

    async def copy(job: _MediaJob) -> NewMedia:
        key: str | None = media_key(job.account_id, job.message_id)
        size, sha256 = job.size, job.sha256
        async with limit:
            try:
                result = await objects.get(job.object_key)
            except JsNotFoundError:
                # expired, or copied and deleted by an earlier delivery of this event
                log.warning("media_object_missing", object_key=job.object_key)
                key = None
            else:
                data = result.data or b""
                assert key is not None
                await ctx.store.put(key, data)
                size = len(data)
                sha256 = sha256 or hashlib.sha256(data).hexdigest()
        return NewMedia(
            message_id=job.message_id,
            account_id=job.account_id,
            storage_key=key,
            mime_type=job.mime_type,
            file_name=job.file_name,
            size=size,
            sha256=sha256,
        )

    copied = await asyncio.gather(*(copy(job) for job in jobs))
    return {m.message_id: m for m in copied}


async def _resolve_chats(conn: asyncpg.Connection, parsed: _Parsed) -> None:
    """One person, one chat per device, whether WhatsApp wrote from the phone
    number or from the LID.

    A message that carries both (the worker knew the phone) belongs to the
    phone chat (``chat_id_for(device, phone jid)``, the id leads and sends
    derive too); a chat opened earlier by the LID alone merges into it. A
    message that carries only the LID goes to the chat that knows that LID,
    else to a chat opened by the LID until the phone is learnt.
    """
    phone_of: dict[tuple[str, str, str], str] = {}
    keys: set[tuple[str, str, str]] = set()
    for msg, _ in parsed.messages:
        contact = parsed.contacts[msg.id]
        if contact.lid is None:
            continue
        key = (msg.account_id, msg.device_id, contact.lid)
        keys.add(key)
        if not _is_lid(contact.jid):
            phone_of[key] = contact.jid
    if not keys:
        return
    rows = await chats_repo.lock_by_lids(conn, sorted(keys))
    existing = {(str(r["account_id"]), str(r["device_id"]), r["lid"]): r for r in rows}
    lid_chats: dict[tuple[str, str, str], tuple[str, str]] = {}
    for key in sorted(keys):
        _, device_id, lid = key
        row = existing.get(key)
        phone_jid = phone_of.get(key)
        if phone_jid is not None:
            target = _chat_id(device_id, phone_jid)
            if row is not None and str(row["id"]) != target:
                if _is_lid(row["jid"]):
                    await chats_repo.merge_into(
                        conn, str(row["id"]), target, phone_jid, phone_from_jid(phone_jid)
                    )
                    log.info("chat_merged", source=str(row["id"]), target=target)
                else:  # the LID moved to another number
                    await chats_repo.forget_lid(conn, str(row["id"]))
            lid_chats[key] = (target, phone_jid)
        elif row is not None:
            lid_chats[key] = (str(row["id"]), row["jid"])
        else:
            lid_chats[key] = (_chat_id(device_id, lid), lid)
    for msg, _ in parsed.messages:
        contact = parsed.contacts[msg.id]
        if contact.lid is not None and _is_lid(contact.jid):
            msg.chat_id, contact.jid = lid_chats[(msg.account_id, msg.device_id, contact.lid)]


def _outcome_jobs(parsed: _Parsed) -> list[_MediaJob]:
    """Copy jobs for the files of ``media`` events that are ready."""
    jobs = []
    for (device_id, wa_id), (account_id, media) in parsed.media_outcomes.items():
        if media.status == "ready" and media.media is not None:
            jobs.append(
                _MediaJob(
                    message_id=message_id_for(device_id, wa_id),
                    account_id=account_id,
                    object_key=media.media.object_key,
                    mime_type=media.media.mime_type,
                    file_name=media.media.file_name,
                    size=media.media.size,
                    sha256=media.media.sha256,
                )
            )
    return jobs


def _outcomes(parsed: _Parsed, copied: dict[str, NewMedia]) -> list[MediaOutcome]:
    outcomes = []
    for (device_id, wa_id), (account_id, media) in parsed.media_outcomes.items():
        message_id = message_id_for(device_id, wa_id)
        stored = copied.get(message_id)
        if media.status == "ready" and stored is not None and stored.storage_key is not None:
            outcome = MediaOutcome(
                message_id, account_id, "ready", None, False,
                storage_key=stored.storage_key, size=stored.size, sha256=stored.sha256,
            )  # fmt: skip
        elif media.status == "ready":
            outcome = MediaOutcome(message_id, account_id, "failed", MEDIA_EXPIRED, True)
        else:
            error = media.error or (
                "The file is too large" if media.status == "too_large" else "The download failed"
            )
            retryable = media.retryable and media.status == "failed"
            outcome = MediaOutcome(message_id, account_id, media.status, error, retryable)
        outcomes.append(outcome)
    return outcomes


def _chat_upserts(
    messages: list[tuple[NewMessage, WaMessage]],
    contacts: dict[str, _Contact],
    inserted: set[str],
) -> list[chats_repo.ChatUpsert]:
    chats: dict[str, chats_repo.ChatUpsert] = {}
    for msg, wa in messages:
        if msg.id not in inserted:
            continue
        contact = contacts[msg.id]
        jid = contact.jid
        group = wa.is_group or _is_group(jid)
        # a direct chat is named after the person's WhatsApp push name
        name = wa.push_name if msg.direction == "in" and not group else None
        chat = chats.get(msg.chat_id)
        if chat is None:
            chat = chats[msg.chat_id] = chats_repo.ChatUpsert(
                id=msg.chat_id,
                account_id=msg.account_id,
                device_id=msg.device_id,
                jid=jid,
                phone=None if group else phone_from_jid(jid),
                is_group=group,
                name=name,
                preview=None,
                last_at=None,
                unread=0,
                lid=contact.lid,
            )
        else:
            chat.name = name or chat.name
            chat.lid = contact.lid or chat.lid
        if msg.direction == "in":
            chat.unread += 1
        if chat.last_at is None or msg.sent_at >= chat.last_at:
            chat.last_at = msg.sent_at
            chat.preview = preview(msg.type, msg.body)
    return sorted(chats.values(), key=lambda c: c.id)


def _message_model(msg: NewMessage, media: NewMedia | None) -> Message:
    status: Any = media.status if media is not None else "ready"
    return Message(
        id=msg.id,
        chat_id=msg.chat_id,
        device_id=msg.device_id,
        wa_message_id=msg.wa_message_id,
        direction=msg.direction,
        type=msg.type,
        body=msg.body,
        media=None
        if media is None
        else Media(
            url=media_url(msg.id),
            mime_type=media.mime_type,
            file_name=media.file_name,
            size=media.size,
            status=status,
            error=media.error,
        ),
        status=msg.status,
        sender_jid=msg.sender_jid,
        sender_name=msg.sender_name,
        sent_at=msg.sent_at,
        client_id=msg.client_id,
    )


async def handle_wa_events(
    ctx: MessagingContext, deliveries: list[Delivery], db_turn: asyncio.Lock | None = None
) -> None:
    """The batch handler of the ``wa.evt`` consumer.

    ``db_turn`` lets two batches overlap (one parsing or publishing while the
    other is in PostgreSQL) while their transactions still run one at a time,
    in the order the batches arrived (the lock is FIFO).
    """
    parsed = _parse(deliveries)
    new_messages = [m for m, _ in parsed.messages]
    outcome_jobs = _outcome_jobs(parsed)
    # take the turn right after the synchronous parse: the batch fetched first
    # always asks first
    async with db_turn or contextlib.nullcontext():
        media = await _copy_media(ctx, parsed.media_jobs)
        media.update(parsed.announced)
        outcomes = _outcomes(parsed, await _copy_media(ctx, outcome_jobs))
        async with ctx.pool.acquire() as conn, conn.transaction():
            await _resolve_chats(conn, parsed)
            inserted = await messages_repo.insert_many(conn, new_messages)
            await messages_repo.insert_media_many(
                conn, [m for message_id, m in media.items() if message_id in inserted]
            )
            chat_rows = await chats_repo.upsert_many(
                conn, _chat_upserts(parsed.messages, parsed.contacts, inserted)
            )
            reopened = await chats_repo.reopen_resolved(
                conn,
                list({m.chat_id for m in new_messages if m.id in inserted and m.direction == "in"}),
            )
            settled = await messages_repo.settle_sent_many(conn, list(parsed.sents.values()))
            receipts = await messages_repo.apply_receipts(conn, list(parsed.receipts.values()))
            sent_rows = await messages_repo.get_many(
                conn, [str(r["id"]) for r in settled if r["status"] == "sent"]
            )
            applied = await conversation.apply_pending(
                conn,
                [
                    (m.account_id, m.device_id, m.wa_message_id)
                    for m in new_messages
                    if m.id in inserted and m.wa_message_id
                ]
                if await conversation.any_pending(conn)
                else [],
            )
            applied.merge(await conversation.apply(conn, parsed.updates))
            media_changed = await messages_repo.apply_media_outcomes(conn, outcomes)
            unsettled = [o.message_id for o in outcomes if o.message_id not in media_changed]
            early = set(unsettled) - await messages_repo.existing_message_ids(conn, unsettled)
            if early:
                raise MediaBeforeItsMessage(f"media of messages not stored yet: {sorted(early)}")
            updated_rows = await messages_repo.get_many(
                conn, sorted(media_changed | (applied.changed - inserted))
            )
            presence_chats = await _presence_chats(conn, parsed.presences)
            preview_chats = await conversation.chat_rows(conn, applied.chats)
            # replies are announced with their quote as stored
            replies = {
                str(r["id"]): message_from_row(r)
                for r in await messages_repo.get_many(
                    conn, [m.id for m in new_messages if m.id in inserted and m.reply_to_wa_id]
                )
            }
            chats: dict[str, Chat] = {
                str(r["id"]): chat_from_row(r) for r in (*chat_rows, *reopened)
            }
            events: list[app_events.Event] = [
                app_events.chat_updated(str(r["account_id"]), chats[str(r["id"])]) for r in reopened
            ]
            for msg in new_messages:
                if msg.id in inserted:
                    message = replies.get(msg.id) or _message_model(msg, media.get(msg.id))
                    events.append(
                        app_events.new_message(msg.account_id, message, chats[msg.chat_id])
                    )
            for row in sent_rows:
                events.append(
                    app_events.message_sent(str(row["account_id"]), message_from_row(row))
                )
            for row in updated_rows:
                events.append(
                    app_events.message_updated(str(row["account_id"]), message_from_row(row))
                )
            for row in (*settled, *receipts):
                if row["status"] != "sent":
                    events.append(
                        app_events.message_status(
                            str(row["account_id"]),
                            str(row["id"]),
                            str(row["chat_id"]),
                            row["status"],
                            device_id=str(row["device_id"]),
                        )
                    )
            for row in preview_chats:
                events.append(app_events.chat_updated(str(row["account_id"]), chat_from_row(row)))
            for (account_id, _, presence), chat_id in zip(
                parsed.presences, presence_chats, strict=True
            ):
                if chat_id is not None:
                    events.append(app_events.presence(account_id, chat_id, presence.state))
            # published after the commit (the outbox); the WA events are acked after that
            staged = await stage_events(conn, events)
    await ctx.outbox.publish(staged)
    await _delete_objects(ctx, [job.object_key for job in (*parsed.media_jobs, *outcome_jobs)])
    await delete_stored_media(ctx, applied.storage_keys)


async def _presence_chats(
    conn: asyncpg.Connection, presences: list[tuple[str, str, WaPresence]]
) -> list[str | None]:
    """The chat of each presence (by phone JID or LID), None when we have none."""
    found: list[str | None] = []
    for account_id, device_id, presence in presences:
        jid = normalize_jid(presence.chat_jid)
        lid = normalize_jid(presence.chat_lid) if presence.chat_lid else None
        if _is_lid(jid):
            jid, lid = jid, jid
        chat_id = await conn.fetchval(
            "SELECT id FROM chats WHERE account_id = $1 AND device_id = $2 "
            "AND (id = $3 OR ($4::text IS NOT NULL AND lid = $4)) ORDER BY (id = $3) DESC LIMIT 1",
            account_id,
            device_id,
            _chat_id(device_id, jid),
            lid,
        )
        found.append(str(chat_id) if chat_id is not None else None)
    return found


async def delete_stored_media(ctx: MessagingContext, keys: list[str]) -> None:
    """The files of messages deleted for everyone leave the disk (after commit)."""
    for key in keys:
        try:
            await ctx.store.delete(key)
        except Exception as exc:  # the row is gone: an orphan file is only space
            log.warning("media_delete_failed", key=key, error=str(exc))


async def _delete_objects(ctx: MessagingContext, keys: list[str]) -> None:
    """The bytes are ours now; the object store would drop them at its TTL anyway."""
    if not keys:
        return
    objects = ctx.objects
    results = await asyncio.gather(*(objects.delete(k) for k in keys), return_exceptions=True)
    for key, result in zip(keys, results, strict=True):
        if isinstance(result, Exception) and not isinstance(result, JsNotFoundError):
            log.warning("media_object_delete_failed", object_key=key, error=str(result))
