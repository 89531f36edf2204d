"""Rows of the ``messaging`` schema as the public shapes of API.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clarin_common.contract import Chat, Media, Message

PREVIEW_MAX = 120

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


def preview(type_: str, body: str | None) -> str:
    text = (body or "").strip() or _PLACEHOLDERS.get(type_, "Message")
    return text if len(text) <= PREVIEW_MAX else text[: PREVIEW_MAX - 1] + "…"


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


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
        lead_id=_str(row["lead_id"]),
        lid=row["lid"],
        status=row["status"],
        assigned_to=_str(row["assigned_to"]),
        labels=list(row["labels"]),
    )


def message_from_row(row: Mapping[str, Any]) -> MessageOut:
    """A row of ``messages`` LEFT JOIN ``media`` (columns ``media_*``)."""
    message_id = str(row["id"])
    media = None
    if row["media_mime_type"] is not None:
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
        body=row["body"],
        media=media,
        status=row["status"],
        sender_jid=row["sender_jid"],
        sender_name=row["sender_name"],
        sent_at=row["sent_at"],
        client_id=row["client_id"],
        author_id=_str(row["author_id"]),
        error=row["error"],
    )
