"""Rows of the ``messaging`` schema as the public shapes of API.md."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from clarin_common.contract import Chat, Media, Message, QuotedMessage, Reaction
from clarin_common.db import str_or_none

PREVIEW_MAX = 120
DELETED_PREVIEW = "🚫 Deleted message"

_PLACEHOLDERS = {
    "image": "📷 Photo",
    "video": "🎥 Video",
    "audio": "🎤 Audio",
    "document": "📄 Document",
    "sticker": "Sticker",
    "location": "📍 Location",
    "contact": "👤 Contact",
    "reaction": "Reaction",
    "unknown": "Message",
}


class MessageOut(Message):
    """``Message`` of API.md plus why a failed send failed."""

    error: str | None = None


def media_url(message_id: str) -> str:
    return f"/api/media/{message_id}"


def preview(type_: str, body: str | None, deleted: bool = False) -> str:
    if deleted:
        return DELETED_PREVIEW
    text = (body or "").strip() or _PLACEHOLDERS.get(type_, "Message")
    return text if len(text) <= PREVIEW_MAX else text[: PREVIEW_MAX - 1] + "…"


def chat_from_row(row: Mapping[str, Any]) -> Chat:
    return Chat(
        id=str(row["id"]),
        device_id=str(row["device_id"]),
        jid=row["jid"],
        name=row["name"],
        phone=row["phone"],
        last_message_preview=row["last_message_preview"],
        last_message_at=row["last_message_at"],
        unread_count=row["unread_count"],
        lead_id=str_or_none(row["lead_id"]),
        lid=row["lid"],
        status=row["status"],
        assigned_to=str_or_none(row["assigned_to"]),
        labels=list(row["labels"]),
    )


def message_from_row(row: Mapping[str, Any]) -> MessageOut:
    """A row of ``messages`` LEFT JOIN ``media`` (columns ``media_*``)."""
    message_id = str(row["id"])
    deleted = row["deleted_at"] is not None
    media = None
    if row["media_mime_type"] is not None and not deleted:
        media = Media(
            url=media_url(message_id),
            mime_type=row["media_mime_type"],
            file_name=row["media_file_name"],
            size=row["media_size"],
            status=row["media_status"],
            error=row["media_error"],
        )
    return MessageOut(
        id=message_id,
        chat_id=str(row["chat_id"]),
        device_id=str(row["device_id"]),
        wa_message_id=row["wa_message_id"],
        direction=row["direction"],
        type=row["type"],
        body=None if deleted else row["body"],
        media=media,
        status=row["status"],
        sender_jid=row["sender_jid"],
        sender_name=row["sender_name"],
        sent_at=row["sent_at"],
        client_id=row["client_id"],
        author_id=str_or_none(row["author_id"]),
        error=row["error"],
        reply_to=str_or_none(row["q_id"]),
        quoted=_quoted(row),
        reactions=[Reaction.model_validate(r) for r in _json_list(row["reactions"])],
        edited_at=row["edited_at"],
        deleted=deleted,
    )


def _json_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return list(value or [])


def _quoted(row: Mapping[str, Any]) -> QuotedMessage | None:
    """The quote above a reply: the stored message when we have it, else the
    preview the quote itself carried."""
    wa_id = row["reply_to_wa_id"]
    if wa_id is None:
        return None
    if row["q_id"] is not None:
        deleted = row["q_deleted_at"] is not None
        return QuotedMessage(
            message_id=str(row["q_id"]),
            wa_message_id=wa_id,
            type=row["q_type"],
            body=None if deleted else row["q_body"],
            sender_jid=row["q_sender_jid"],
            from_me=row["q_direction"] == "out",
            deleted=deleted,
        )
    return QuotedMessage(
        wa_message_id=wa_id,
        type=row["quoted_type"] or "text",
        body=row["quoted_body"],
        sender_jid=row["quoted_sender_jid"],
        from_me=row["quoted_from_me"],
    )
