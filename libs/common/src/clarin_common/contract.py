"""The public shapes of API.md, shared by the REST answers and the events.

Adding fields is fine; changing or removing one is a breaking change for the
clients and for the teams that consume the events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

DeviceStatus = Literal[
    "disconnected", "connecting", "qr_pending", "connected", "logged_out", "error"
]
MessageType = Literal[
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contact",
    "reaction",
    "unknown",
]
MessageStatus = Literal["pending", "sent", "delivered", "read", "failed", "received"]
Direction = Literal["in", "out"]
# a message of a chat's timeline: WhatsApp's two directions, or an agent's private note
MessageDirection = Literal["in", "out", "note"]
ChatStatus = Literal["open", "pending", "resolved"]
Role = Literal["admin", "agent"]
LeadSource = Literal["manual", "whatsapp"]


class Contract(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Account(Contract):
    id: str
    name: str


class User(Contract):
    id: str
    account_id: str
    email: str
    name: str
    role: Role
    # a disabled user keeps their history but cannot sign in
    disabled: bool = False


class Device(Contract):
    id: str
    account_id: str
    name: str
    phone: str | None = None
    jid: str | None = None
    status: DeviceStatus
    last_error: str | None = None
    last_seen_at: datetime | None = None
    created_at: datetime


MediaStatus = Literal["ready", "pending", "failed", "too_large"]


class Media(Contract):
    url: str
    mime_type: str
    file_name: str | None = None
    size: int
    # ``pending`` while the worker fetches the file, ``failed`` (retry with
    # ``POST /api/media/{message_id}/retry``) or ``too_large`` with ``error``
    status: MediaStatus = "ready"
    error: str | None = None


class Chat(Contract):
    id: str
    device_id: str
    jid: str
    name: str | None = None
    phone: str | None = None
    last_message_preview: str | None = None
    last_message_at: datetime | None = None
    unread_count: int = 0
    lead_id: str | None = None
    # the contact's LID JID (``…@lid``) when WhatsApp told us; ``jid`` is the
    # phone form whenever it is known
    lid: str | None = None
    # the chat as a conversation the team works: new chats are open, an inbound
    # message reopens a resolved one
    status: ChatStatus = "open"
    assigned_to: str | None = None
    labels: list[str] = []


class Reaction(Contract):
    """One sender's reaction to a message (one per sender: a new one replaces it)."""

    emoji: str
    sender_jid: str | None = None
    # our own number reacted (from Clarin or from the phone)
    from_me: bool = False


class QuotedMessage(Contract):
    """What a reply shows above itself: the quoted message as stored (then
    ``message_id`` is set), or the preview the quote carried when that message
    was never stored."""

    message_id: str | None = None
    wa_message_id: str | None = None
    type: MessageType = "text"
    body: str | None = None
    sender_jid: str | None = None
    from_me: bool = False
    deleted: bool = False


class Message(Contract):
    id: str
    chat_id: str
    device_id: str
    wa_message_id: str | None = None
    direction: MessageDirection
    type: MessageType
    body: str | None = None
    media: Media | None = None
    status: MessageStatus
    sender_jid: str | None = None
    sender_name: str | None = None
    sent_at: datetime
    client_id: str | None = None
    # the user who wrote a private note (``direction: "note"``), else null
    author_id: str | None = None
    # the message this one answers (same chat), when it is stored
    reply_to: str | None = None
    quoted: QuotedMessage | None = None
    reactions: list[Reaction] = []
    edited_at: datetime | None = None
    # deleted for everyone: the row stays, its body and media are gone
    deleted: bool = False


class Lead(Contract):
    id: str
    account_id: str
    name: str
    phone: str | None = None
    email: str | None = None
    company: str | None = None
    stage: str
    tags: list[str] = []
    notes: str | None = None
    value: float | None = None
    assigned_to: str | None = None
    source: LeadSource
    chat_id: str | None = None
    last_contact_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
