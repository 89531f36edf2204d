"""Edits, deletes for everyone and reactions: changes to stored messages.

WhatsApp sends each of them as its own event (``wa.evt.*.*.edit|revoke|reaction``)
naming the message by ``wa_message_id``. They apply in the transaction of the
batch that carries them (or of the REST call that made them, once WhatsApp
accepted); applying one twice changes nothing, and an older one never undoes a
newer one:

- an edit replaces the body when it is newer than the last edit, keeping the
  previous body in ``message_edits`` (audit, never in the API);
- a revoke marks the message deleted: body null, media row gone (its bytes are
  deleted from the media store after commit), edits and reactions gone;
- a reaction is one per sender and message, replaced by a newer one; ``""``
  removes it (the row stays with an empty emoji so that a late older reaction
  cannot come back).

One whose message is not stored yet waits in ``pending_updates`` until the
message arrives (``apply_pending``) or a day has passed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg

from clarin_common.events import WaEdit, WaReaction, WaRevoke
from clarin_common.ids import normalize_jid
from clarin_messaging.chats import repository as chats_repo
from clarin_messaging.convert import preview
from clarin_messaging.messages import repository as messages_repo

UpdateKind = Literal["edit", "revoke", "reaction"]
PENDING_TTL = "1 day"
OWN_SENDER = "me"


@dataclass
class Update:
    kind: UpdateKind
    account_id: str
    device_id: str
    event: WaEdit | WaRevoke | WaReaction

    @property
    def wa_message_id(self) -> str:
        return self.event.wa_message_id

    @property
    def occurred_at(self) -> datetime:
        event = self.event
        if isinstance(event, WaEdit):
            return event.edited_at
        if isinstance(event, WaRevoke):
            return event.revoked_at
        return event.reacted_at


def update_from(kind: str, account_id: str, device_id: str, data: dict[str, Any]) -> Update:
    """Raises pydantic's ValidationError for a malformed event."""
    event: WaEdit | WaRevoke | WaReaction
    if kind == "edit":
        event = WaEdit.model_validate(data)
        return Update("edit", account_id, device_id, event)
    if kind == "revoke":
        event = WaRevoke.model_validate(data)
        return Update("revoke", account_id, device_id, event)
    event = WaReaction.model_validate(data)
    return Update("reaction", account_id, device_id, event)


@dataclass
class Applied:
    """What a set of updates changed: message ids to announce, media bytes to
    delete after commit, how many waited for their message."""

    changed: set[str] = field(default_factory=set)
    storage_keys: list[str] = field(default_factory=list)
    pending: int = 0
    # chats whose last message preview changed (an edit or delete of their latest)
    chats: set[str] = field(default_factory=set)

    def merge(self, other: Applied) -> None:
        self.changed |= other.changed
        self.storage_keys += other.storage_keys
        self.pending += other.pending
        self.chats |= other.chats


def _is_group(jid: str) -> bool:
    return jid.endswith("@g.us")


async def apply(conn: asyncpg.Connection, updates: Sequence[Update]) -> Applied:
    """Apply updates in the order they happened; unknown targets wait."""
    applied = Applied()
    if not updates:
        return applied
    keys = sorted({(u.device_id, u.account_id, u.wa_message_id) for u in updates})
    rows = await conn.fetch(
        """
        SELECT m.id, m.account_id, m.device_id, m.wa_message_id, m.chat_id, m.direction,
               m.deleted_at, m.edited_at, m.body, c.jid AS chat_jid
        FROM messages m
        JOIN unnest($1::uuid[], $2::uuid[], $3::text[]) AS k(device_id, account_id, wa_id)
          ON m.device_id = k.device_id AND m.account_id = k.account_id
         AND m.wa_message_id = k.wa_id
        JOIN chats c ON c.id = m.chat_id
        ORDER BY m.id
        FOR UPDATE OF m
        """,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
    )
    targets = {(str(r["device_id"]), r["wa_message_id"]): dict(r) for r in rows}
    waiting: list[Update] = []
    touched_chats: set[str] = set()
    for update in sorted(updates, key=lambda u: u.occurred_at):
        target = targets.get((update.device_id, update.wa_message_id))
        if target is None:
            waiting.append(update)
            continue
        if await _apply_one(conn, update, target, applied):
            applied.changed.add(str(target["id"]))
            if update.kind != "reaction":
                touched_chats.add(str(target["chat_id"]))
    if waiting:
        await _keep_pending(conn, waiting)
        applied.pending = len(waiting)
    for chat_id in sorted(touched_chats):
        if await _refresh_preview(conn, chat_id, applied.changed):
            applied.chats.add(chat_id)
    return applied


def _direction_matches(update: Update, target: dict[str, Any]) -> bool:
    """In a one-to-one chat a contact changes only their own messages and we
    only ours (a group admin may delete others': not checked there)."""
    if _is_group(target["chat_jid"]):
        return True
    return bool((target["direction"] == "out") == update.event.from_me)


async def _apply_one(
    conn: asyncpg.Connection, update: Update, target: dict[str, Any], applied: Applied
) -> bool:
    message_id = target["id"]
    event = update.event
    if target["deleted_at"] is not None:
        return False  # nothing changes a message deleted for everyone
    if isinstance(event, WaEdit):
        if not _direction_matches(update, target) or target["direction"] == "note":
            return False
        if target["edited_at"] is not None and event.edited_at <= target["edited_at"]:
            return False
        await conn.execute(
            "INSERT INTO message_edits (message_id, account_id, previous_body, from_me, "
            "edited_at) VALUES ($1, $2, $3, $4, $5)",
            message_id,
            target["account_id"],
            target["body"],
            event.from_me,
            event.edited_at,
        )
        await conn.execute(
            "UPDATE messages SET body = $2, edited_at = $3, updated_at = now() WHERE id = $1",
            message_id,
            event.body,
            event.edited_at,
        )
        target["edited_at"], target["body"] = event.edited_at, event.body
        return True
    if isinstance(event, WaRevoke):
        if not _direction_matches(update, target):
            return False
        await conn.execute(
            "UPDATE messages SET deleted_at = $2, body = NULL, quoted_body = NULL, "
            "updated_at = now() WHERE id = $1",
            message_id,
            event.revoked_at,
        )
        keys = await conn.fetch(
            "DELETE FROM media WHERE message_id = $1 RETURNING storage_key", message_id
        )
        applied.storage_keys += [k["storage_key"] for k in keys if k["storage_key"]]
        await conn.execute("DELETE FROM message_edits WHERE message_id = $1", message_id)
        await conn.execute("DELETE FROM message_reactions WHERE message_id = $1", message_id)
        target["deleted_at"] = event.revoked_at
        return True
    assert isinstance(event, WaReaction)
    sender_key = OWN_SENDER if event.from_me else normalize_jid(event.sender_jid or event.chat_jid)
    changed = await conn.fetchval(
        """
        INSERT INTO message_reactions AS r (message_id, sender_key, account_id, sender_jid,
                                            emoji, from_me, reacted_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (message_id, sender_key) DO UPDATE SET
            emoji = excluded.emoji, sender_jid = excluded.sender_jid,
            reacted_at = excluded.reacted_at
        WHERE excluded.reacted_at >= r.reacted_at
          AND (r.emoji, r.reacted_at) IS DISTINCT FROM (excluded.emoji, excluded.reacted_at)
        RETURNING (r.xmax = 0 AND r.emoji = '') AS removed_new
        """,
        message_id,
        sender_key,
        target["account_id"],
        # ours are ours (from_me): the same row whether the API's confirmation or
        # the worker's event (which knows our JID) lands first
        None if event.from_me or not event.sender_jid else normalize_jid(event.sender_jid),
        event.emoji,
        event.from_me,
        event.reacted_at,
    )
    # a removal of a reaction we never had stores its tombstone and shows nothing new
    return changed is not None and not changed


async def _refresh_preview(conn: asyncpg.Connection, chat_id: str, changed: set[str]) -> bool:
    """An edit or delete of a chat's latest message shows in the chat list."""
    latest = await messages_repo.latest_in_chat(conn, chat_id)
    if latest is None or str(latest["id"]) not in changed:
        return False
    await chats_repo.set_last_message(
        conn,
        chat_id,
        preview(latest["type"], latest["body"], latest["deleted_at"] is not None),
        latest["sent_at"],
    )
    return True


async def chat_rows(conn: asyncpg.Connection, chat_ids: set[str]) -> list[asyncpg.Record]:
    """The chats whose preview changed, to announce as ``chat_updated``."""
    if not chat_ids:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM chats WHERE id = ANY($1::uuid[])", sorted(chat_ids)
    )
    return rows


async def _keep_pending(conn: asyncpg.Connection, updates: Sequence[Update]) -> None:
    await conn.execute(
        f"DELETE FROM pending_updates WHERE received_at < now() - interval '{PENDING_TTL}'"
    )
    await conn.executemany(
        """
        INSERT INTO pending_updates (account_id, device_id, wa_message_id, kind, payload,
                                     occurred_at)
        SELECT $1, $2, $3, $4, $5::jsonb, $6
        WHERE NOT EXISTS (
            SELECT 1 FROM pending_updates
            WHERE device_id = $2 AND wa_message_id = $3 AND kind = $4 AND payload = $5::jsonb)
        """,
        [
            (
                u.account_id,
                u.device_id,
                u.wa_message_id,
                u.kind,
                json.dumps(u.event.model_dump(mode="json")),
                u.occurred_at,
            )
            for u in updates
        ],
    )


async def apply_pending(
    conn: asyncpg.Connection, inserted: Sequence[tuple[str, str, str]]
) -> Applied:
    """Updates that waited for messages just inserted (``(account_id, device_id,
    wa_message_id)``), applied now; those older than a day are dropped."""
    if not inserted:
        return Applied()
    rows = await conn.fetch(
        f"""
        DELETE FROM pending_updates p
        USING unnest($1::uuid[], $2::text[]) AS k(device_id, wa_id)
        WHERE p.device_id = k.device_id AND p.wa_message_id = k.wa_id
        RETURNING p.account_id, p.device_id, p.kind, p.payload,
                  p.received_at >= now() - interval '{PENDING_TTL}' AS fresh
        """,
        [d for _, d, _ in inserted],
        [w for _, _, w in inserted],
    )
    updates = [
        update_from(
            r["kind"],
            str(r["account_id"]),
            str(r["device_id"]),
            r["payload"] if isinstance(r["payload"], dict) else json.loads(r["payload"]),
        )
        for r in rows
        if r["fresh"]
    ]
    return await apply(conn, updates)


async def any_pending(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pending_updates)"))
