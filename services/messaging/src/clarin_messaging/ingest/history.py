"""The history WhatsApp hands over after linking (``wa.evt.*.*.history``).

A consumer of its own (``messaging-history``), so that importing a long history
never holds back the live messages of other devices. Each batch of parts is one
transaction: the messages go in with their own times, inbound ones already
``read`` (no unread counts), idempotent by ``wa_message_id`` (a message seen
live, or in an earlier delivery of the same part, is left alone), older than
``MESSAGING_HISTORY_DAYS`` skipped; their chats are created or moved forward
without an unread. No ``new_message`` is published and no lead is created (the
leads service reads only ``message`` events): the first part of a sync
announces ``history_importing``, the part marked ``last`` ``history_synced``
with what the whole sync added, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import structlog
from pydantic import ValidationError

from clarin_common.events import WaHistory, utcnow
from clarin_common.ids import normalize_jid
from clarin_common.nats import Delivery, PoisonMessage
from clarin_common.outbox import stage_events
from clarin_messaging import app_events
from clarin_messaging.chats import repository as chats_repo
from clarin_messaging.deps import MessagingContext
from clarin_messaging.ingest import conversation
from clarin_messaging.ingest.service import (
    STATUS_BROADCAST,
    _add_message,
    _chat_upserts,
    _Parsed,
    _resolve_chats,
    _uuid,
    delete_stored_media,
)
from clarin_messaging.messages import repository as messages_repo

log = structlog.get_logger(__name__)

HISTORY_MEDIA_ERROR = "Media from the history sync is not downloaded; retry to fetch it"


@dataclass
class _Sync:
    account_id: str
    device_id: str
    sync_id: str
    chats: int = 0
    messages: int = 0
    last: bool = False


async def handle_history_events(ctx: MessagingContext, deliveries: list[Delivery]) -> None:
    cutoff = utcnow() - timedelta(days=ctx.settings.history_days)
    parsed = _Parsed(messages=[], media_jobs=[], sents={}, receipts={})
    seen: set[str] = set()
    syncs: dict[tuple[str, str], _Sync] = {}
    names: dict[tuple[str, str], str] = {}  # (device, chat jid) → the phone's name for it
    for delivery in deliveries:
        env = delivery.envelope
        tokens = delivery.msg.subject.split(".")
        if len(tokens) != 5 or tokens[4] != "history":
            raise PoisonMessage(f"unexpected subject {delivery.msg.subject}")
        account_id = _uuid(env.account_id, "account_id")
        device_id = _uuid(env.device_id, "device_id")
        if (tokens[2], tokens[3]) != (env.account_id, env.device_id):
            raise PoisonMessage("envelope account/device differ from the subject")
        try:
            history = WaHistory.model_validate(env.data)
        except ValidationError as exc:
            raise PoisonMessage(f"invalid history data: {exc}") from exc
        sync = syncs.setdefault(
            (device_id, history.sync_id), _Sync(account_id, device_id, history.sync_id)
        )
        sync.last = sync.last or history.last
        for chat in history.chats:
            if chat.name:
                names[(device_id, normalize_jid(chat.chat_jid))] = chat.name
        for wa in history.messages:
            if wa.sent_at < cutoff or normalize_jid(wa.chat_jid) == STATUS_BROADCAST:
                continue
            # the id is derived from the wa_message_id: the echo of a Clarin send
            # already stored keeps its own row (unique by device and wa id)
            _add_message(
                parsed,
                seen,
                account_id,
                device_id,
                wa.model_copy(update={"message_id": None, "client_id": None}),
            )
    for msg, _ in parsed.messages:
        msg.status = "read" if msg.direction == "in" else "sent"
    for media in parsed.announced.values():
        media.status, media.error = "failed", HISTORY_MEDIA_ERROR
        media.retryable = media.download is not None
    parsed.sents.clear()  # history never settles a send

    events: list[app_events.Event] = []
    async with ctx.pool.acquire() as conn, conn.transaction():
        await _resolve_chats(conn, parsed)
        new_messages = [m for m, _ in parsed.messages]
        inserted = await messages_repo.insert_many(conn, new_messages)
        await messages_repo.insert_media_many(
            conn, [m for mid, m in parsed.announced.items() if mid in inserted]
        )
        upserts = _chat_upserts(parsed.messages, parsed.contacts, inserted)
        for upsert in upserts:
            upsert.unread = 0
            upsert.name = upsert.name or names.get((upsert.device_id, upsert.jid))
        chat_rows = await chats_repo.upsert_many(conn, upserts)
        new_chats: dict[str, int] = {}
        for row in chat_rows:
            if row["inserted"]:
                device = str(row["device_id"])
                new_chats[device] = new_chats.get(device, 0) + 1
        per_device: dict[str, int] = {}
        for msg in new_messages:
            if msg.id in inserted:
                per_device[msg.device_id] = per_device.get(msg.device_id, 0) + 1
        if await conversation.any_pending(conn):
            applied = await conversation.apply_pending(
                conn,
                [
                    (m.account_id, m.device_id, m.wa_message_id)
                    for m in new_messages
                    if m.id in inserted and m.wa_message_id
                ],
            )
        else:
            applied = conversation.Applied()
        # a batch's counts go to the first sync of the device in it
        for sync in syncs.values():
            sync.chats = new_chats.pop(sync.device_id, 0)
            sync.messages = per_device.pop(sync.device_id, 0)
            events += await _record(conn, sync)
        staged = await stage_events(conn, events)
    await ctx.outbox.publish(staged)
    await delete_stored_media(ctx, applied.storage_keys)
    log.info(
        "history_batch_imported",
        parts=len(deliveries),
        messages=len(inserted),
        syncs=len(syncs),
    )


async def _record(conn: asyncpg.Connection, sync: _Sync) -> list[app_events.Event]:
    """Count what this batch added to its sync; the first batch announces the
    import, the last one its end (once: a redelivered last part finds it done)."""
    row = await conn.fetchrow(
        """
        INSERT INTO history_syncs AS h (device_id, sync_id, account_id, chats, messages)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (device_id, sync_id) DO UPDATE SET
            chats = h.chats + excluded.chats, messages = h.messages + excluded.messages
        RETURNING (h.xmax = 0) AS started
        """,
        sync.device_id,
        sync.sync_id,
        sync.account_id,
        sync.chats,
        sync.messages,
    )
    events = []
    if row is not None and row["started"]:
        events.append(app_events.history_importing(sync.account_id, sync.device_id))
    if sync.last:
        done = await conn.fetchrow(
            "UPDATE history_syncs SET finished_at = now() WHERE device_id = $1 AND sync_id = $2 "
            "AND finished_at IS NULL RETURNING chats, messages",
            sync.device_id,
            sync.sync_id,
        )
        if done is not None:
            events.append(
                app_events.history_synced(
                    sync.account_id, sync.device_id, done["chats"], done["messages"]
                )
            )
    return events
