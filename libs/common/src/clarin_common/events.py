"""Event envelope, payloads and subject names of API.md ("NATS").

Every event is an :class:`Envelope`; its ``id`` is unique and is sent as the
``Nats-Msg-Id`` header so that JetStream drops a republish.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from clarin_common.contract import (
    Campaign,
    Chat,
    Device,
    DeviceStatus,
    Direction,
    Lead,
    Message,
    MessageType,
)

WA_EVENTS_STREAM = "WA_EVENTS"
APP_EVENTS_STREAM = "APP_EVENTS"
WA_EVENTS_SUBJECTS = "wa.evt.>"
APP_EVENTS_SUBJECTS = "app.>"
MEDIA_BUCKET = "wa_media"
# the durable send queue: one work-queue stream, subjects wa.out.{device_id}.{priority}
WA_OUTBOX_STREAM = "WA_OUTBOX"
WA_OUTBOX_SUBJECTS = "wa.out.>"
OUTBOX_DONE_BUCKET = "wa_outbox_done"
SendPriority = Literal["interactive", "bulk"]
SEND_PRIORITIES: tuple[SendPriority, ...] = ("interactive", "bulk")

WaKind = Literal[
    "message",
    "receipt",
    "sent",
    "status",
    "qr",
    "media",
    "edit",
    "revoke",
    "reaction",
    "presence",
    "history",
]
AppType = Literal[
    "new_message",
    "message_sent",
    "message_status",
    "message_updated",
    "device_status",
    "qr_code",
    "chat_read",
    "chat_updated",
    "lead_created",
    "lead_updated",
    "lead_deleted",
    "presence",
    "history_importing",
    "history_synced",
    "campaign_progress",
]


def _token(value: str, what: str) -> str:
    if not value or any(c in value for c in ".*> \t\r\n"):
        raise ValueError(f"invalid {what} for a subject: {value!r}")
    return value


def wa_event_subject(account_id: str, device_id: str, kind: WaKind) -> str:
    return f"wa.evt.{_token(account_id, 'account_id')}.{_token(device_id, 'device_id')}.{kind}"


def wa_command_subject(device_id: str) -> str:
    return f"wa.cmd.{_token(device_id, 'device_id')}"


# request/reply, services only (NATS role ``service``): messaging stores and queues a
# send for another service (campaigns) that has no user token to call the API with
MESSAGING_SEND_SUBJECT = "svc.messaging.send"


def wa_outbox_subject(device_id: str, priority: SendPriority) -> str:
    """Where a queued send waits for the worker that holds its device."""
    return f"wa.out.{_token(device_id, 'device_id')}.{priority}"


def app_event_subject(account_id: str, type_: AppType) -> str:
    return f"app.{_token(account_id, 'account_id')}.{type_}"


def sim_subject(device_id: str, action: str) -> str:
    return f"sim.{_token(device_id, 'device_id')}.{_token(action, 'action')}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return str(uuid.uuid4())


T = TypeVar("T", bound=BaseModel)


class Envelope(BaseModel, Generic[T]):
    id: str = Field(default_factory=new_event_id)
    type: str
    account_id: str
    device_id: str | None = None
    occurred_at: datetime = Field(default_factory=utcnow)
    data: T


class RawEnvelope(BaseModel):
    """An envelope whose payload is not parsed yet (routing on ``type``)."""

    model_config = ConfigDict(extra="allow")
    id: str
    type: str
    account_id: str
    device_id: str | None = None
    occurred_at: datetime
    data: dict[str, Any]


# ---- wa.evt.{account}.{device}.{kind}: what the device workers see -------------


class MediaRef(BaseModel):
    """Media bytes of a message, kept in the JetStream object store ``wa_media``
    under ``object_key`` until the messaging service copies them to its store."""

    object_key: str
    mime_type: str
    file_name: str | None = None
    size: int
    sha256: str | None = None


class MediaInfo(BaseModel):
    """What a message says of its media before the file is fetched: the file
    follows in a ``media`` event (or that event says why it never will)."""

    mime_type: str
    file_name: str | None = None
    size: int | None = None
    # driver-specific, opaque to every other reader: what the worker needs to
    # fetch the file again (``retry_media`` hands it back)
    download: str | None = None


class MessageRef(BaseModel):
    """Another message, as WhatsApp points at it: the one a reply quotes (with a
    preview of its text) or the target of a reaction.

    ``from_me`` says whether the linked device's own number wrote it;
    ``sender_jid`` is its author (the contact's JID, or ours), which WhatsApp
    needs in a quote or a reaction of a group message."""

    wa_message_id: str
    from_me: bool = False
    sender_jid: str | None = None
    # the quoted text (body or caption) as the quote carries it: kept as a
    # preview when the quoted message itself was never stored
    body: str | None = None
    type: MessageType = "text"


PresenceState = Literal["composing", "paused", "available", "unavailable"]
TypingState = Literal["composing", "paused"]


class WaMessage(BaseModel):
    """A message seen on WhatsApp, in either direction (kind ``message``).

    A contact may be addressed by phone number (``…@s.whatsapp.net``) or by LID
    (``…@lid``). ``chat_jid``/``sender_jid`` carry the phone form whenever the
    worker knows it, and ``chat_lid``/``sender_lid`` the LID form when known, so
    that one person is one chat whichever address WhatsApp used.
    """

    wa_message_id: str
    chat_jid: str
    chat_lid: str | None = None
    sender_jid: str | None = None
    sender_lid: str | None = None
    push_name: str | None = None
    direction: Direction
    type: MessageType = "text"
    body: str | None = None
    # the file, already in the object store
    media: MediaRef | None = None
    # or: a file still to be fetched, announced by a later ``media`` event
    media_info: MediaInfo | None = None
    is_group: bool = False
    sent_at: datetime
    # set when the message was sent from Clarin (echo of our own send)
    message_id: str | None = None
    client_id: str | None = None
    # the message this one quotes (a reply), with its preview
    reply_to: MessageRef | None = None


class WaReceipt(BaseModel):
    """Delivered/read receipts for messages of one chat (kind ``receipt``)."""

    wa_message_ids: list[str]
    chat_jid: str
    sender_jid: str | None = None
    status: Literal["delivered", "read", "played"]
    receipt_at: datetime


class WaSent(BaseModel):
    """WhatsApp accepted (or refused) an outbound message (kind ``sent``)."""

    message_id: str
    client_id: str | None = None
    chat_jid: str
    wa_message_id: str | None = None
    status: Literal["sent", "failed"]
    error: str | None = None
    sent_at: datetime


class WaStatus(BaseModel):
    """A device's connection status changed (kind ``status``)."""

    status: DeviceStatus
    phone: str | None = None
    jid: str | None = None
    push_name: str | None = None
    last_error: str | None = None
    worker_id: str | None = None


class WaQr(BaseModel):
    """A new QR code to scan (kind ``qr``)."""

    code: str
    expires_at: datetime


class WaMedia(BaseModel):
    """The file of an earlier ``message`` event (``media_info``) was fetched, or
    why not (kind ``media``). ``failed`` with ``retryable`` may be retried with a
    ``retry_media`` command; ``too_large`` never is."""

    wa_message_id: str
    chat_jid: str
    status: Literal["ready", "failed", "too_large"]
    media: MediaRef | None = None
    error: str | None = None
    retryable: bool = False


class WaEdit(BaseModel):
    """A message was edited (kind ``edit``): ``body`` is its new text.

    ``wa_message_id`` is the edited message; ``from_me`` when our own number
    edited it (from Clarin: then ``message_id`` is the Clarin message, and
    ``edit_id`` the id WhatsApp gave the edit itself)."""

    wa_message_id: str
    chat_jid: str
    chat_lid: str | None = None
    sender_jid: str | None = None
    sender_lid: str | None = None
    from_me: bool = False
    body: str | None = None
    edited_at: datetime
    edit_id: str | None = None
    message_id: str | None = None


class WaRevoke(BaseModel):
    """A message was deleted for everyone (kind ``revoke``)."""

    wa_message_id: str
    chat_jid: str
    chat_lid: str | None = None
    sender_jid: str | None = None
    sender_lid: str | None = None
    from_me: bool = False
    revoked_at: datetime
    revoke_id: str | None = None
    message_id: str | None = None


class WaReaction(BaseModel):
    """A reaction to a message, in either direction (kind ``reaction``).

    One reaction per sender and message: a new one replaces it, ``emoji`` ""
    removes it. ``wa_message_id`` is the message reacted to; ``sender_jid`` who
    reacted (our own JID when ``from_me``); ``reaction_id`` the id of the
    reaction message itself; ``message_id`` the Clarin message reacted to when
    the reaction was made from Clarin."""

    wa_message_id: str
    chat_jid: str
    chat_lid: str | None = None
    sender_jid: str | None = None
    sender_lid: str | None = None
    from_me: bool = False
    emoji: str
    reacted_at: datetime
    reaction_id: str | None = None
    message_id: str | None = None


class WaPresence(BaseModel):
    """A contact is typing, stopped, came online or went away (kind
    ``presence``); relayed live, never stored."""

    chat_jid: str
    chat_lid: str | None = None
    sender_jid: str | None = None
    state: PresenceState
    at: datetime


class WaHistoryChat(BaseModel):
    """A chat of a history sync, with the name the phone knows it by."""

    chat_jid: str
    chat_lid: str | None = None
    name: str | None = None
    is_group: bool = False


class WaHistory(BaseModel):
    """Part of the history WhatsApp sends after linking (kind ``history``).

    One sync (``sync_id``) arrives as several events, each a batch of chats and
    of messages with their own ``sent_at``, in any order; ``last`` marks the
    final batch of the sync (once every earlier batch was published).
    ``progress`` is WhatsApp's own 0-100 estimate when it gives one. A message
    of history never triggers a download: ``media_info`` may say what the file
    was, and no ``media`` event follows."""

    sync_id: str
    batch: int = 0
    last: bool = False
    progress: int | None = None
    chats: list[WaHistoryChat] = []
    messages: list[WaMessage] = []


WA_EVENT_MODELS: dict[WaKind, type[BaseModel]] = {
    "message": WaMessage,
    "receipt": WaReceipt,
    "sent": WaSent,
    "status": WaStatus,
    "qr": WaQr,
    "media": WaMedia,
    "edit": WaEdit,
    "revoke": WaRevoke,
    "reaction": WaReaction,
    "presence": WaPresence,
    "history": WaHistory,
}


# ---- app.{account}.{type}: after commit, for the WebSocket hub and other teams --


class NewMessageData(BaseModel):
    message: Message
    chat: Chat


class MessageSentData(BaseModel):
    message: Message


class MessageStatusData(BaseModel):
    message_id: str
    chat_id: str
    status: Literal["pending", "sent", "delivered", "read", "failed", "received"]


class MessageUpdatedData(BaseModel):
    """A stored message changed after it was announced (its media arrived or
    failed, it was edited or deleted, its reactions changed): the whole message
    as it is now."""

    message: Message


class DeviceStatusData(BaseModel):
    device: Device


class QrCodeData(BaseModel):
    device_id: str
    code: str
    expires_at: datetime


class ChatReadData(BaseModel):
    chat_id: str


class ChatUpdatedData(BaseModel):
    """A conversation's status, assignee or labels changed (also: an inbound
    message reopened a resolved chat)."""

    chat: Chat


class PresenceData(BaseModel):
    """A contact of ``chat_id`` is typing / stopped / online / away (not stored)."""

    chat_id: str
    state: PresenceState


class HistoryImportingData(BaseModel):
    """A history import started for a device (the web app shows a notice)."""

    device_id: str


class HistorySyncedData(BaseModel):
    """A history import finished: how many chats and messages it added."""

    device_id: str
    chats: int
    messages: int


class LeadData(BaseModel):
    lead: Lead


class LeadDeletedData(BaseModel):
    lead_id: str


class CampaignProgressData(BaseModel):
    """A running campaign's counters (at most once a second per campaign)."""

    campaign: Campaign


APP_EVENT_MODELS: dict[AppType, type[BaseModel]] = {
    "new_message": NewMessageData,
    "message_sent": MessageSentData,
    "message_status": MessageStatusData,
    "message_updated": MessageUpdatedData,
    "device_status": DeviceStatusData,
    "qr_code": QrCodeData,
    "chat_read": ChatReadData,
    "chat_updated": ChatUpdatedData,
    "lead_created": LeadData,
    "lead_updated": LeadData,
    "lead_deleted": LeadDeletedData,
    "presence": PresenceData,
    "history_importing": HistoryImportingData,
    "history_synced": HistorySyncedData,
    "campaign_progress": CampaignProgressData,
}


def wa_envelope(
    account_id: str, device_id: str, kind: WaKind, data: BaseModel, event_id: str | None = None
) -> Envelope[Any]:
    env: Envelope[Any] = Envelope(type=kind, account_id=account_id, device_id=device_id, data=data)
    if event_id:
        env.id = event_id
    return env


def app_envelope(
    account_id: str, type_: AppType, data: BaseModel, device_id: str | None = None
) -> Envelope[Any]:
    return Envelope(type=type_, account_id=account_id, device_id=device_id, data=data)


def ws_frame(envelope: RawEnvelope | Envelope[Any]) -> dict[str, Any]:
    """The WebSocket frame of API.md for an application event."""
    data = (
        envelope.data if isinstance(envelope.data, dict) else envelope.data.model_dump(mode="json")
    )
    return {
        "type": envelope.type,
        "account_id": envelope.account_id,
        "data": data,
        "ts": envelope.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


# ---- wa.cmd.{device_id}: request/reply commands to the owning worker -----------


class SendTextCommand(BaseModel):
    type: Literal["send_text"] = "send_text"
    message_id: str
    client_id: str | None = None
    to: str
    body: str
    # the message this one answers (WhatsApp shows it quoted above)
    reply_to: MessageRef | None = None


class SendMediaCommand(BaseModel):
    type: Literal["send_media"] = "send_media"
    message_id: str
    client_id: str | None = None
    to: str
    media_type: MessageType
    media: MediaRef
    caption: str | None = None
    reply_to: MessageRef | None = None


class MarkReadCommand(BaseModel):
    type: Literal["mark_read"] = "mark_read"
    chat_jid: str
    sender_jid: str | None = None
    wa_message_ids: list[str]


class RetryMediaCommand(BaseModel):
    """Fetch again the file of an inbound message whose ``media`` event failed;
    the outcome is a new ``media`` event."""

    type: Literal["retry_media"] = "retry_media"
    wa_message_id: str
    chat_jid: str
    mime_type: str
    download: str | None = None


class ReactCommand(BaseModel):
    """React to ``target`` in ``chat_jid`` (``emoji`` "" removes our reaction).
    ``message_id`` is the Clarin message reacted to. Once WhatsApp accepts it a
    ``reaction`` event (``from_me``) follows, and the reply is
    ``result = {"wa_message_id", "sent_at"}`` of the reaction message."""

    type: Literal["react"] = "react"
    message_id: str
    chat_jid: str
    target: MessageRef
    emoji: str


class EditCommand(BaseModel):
    """Replace the text of our own message ``wa_message_id``; an ``edit`` event
    (``from_me``) follows once WhatsApp accepts it."""

    type: Literal["edit"] = "edit"
    message_id: str
    chat_jid: str
    wa_message_id: str
    body: str


class RevokeCommand(BaseModel):
    """Delete our own message ``wa_message_id`` for everyone; a ``revoke`` event
    (``from_me``) follows once WhatsApp accepts it."""

    type: Literal["revoke"] = "revoke"
    message_id: str
    chat_jid: str
    wa_message_id: str


class TypingCommand(BaseModel):
    """Show (``composing``) or stop showing (``paused``) the agent typing."""

    type: Literal["typing"] = "typing"
    chat_jid: str
    state: TypingState


class PairPhoneCommand(BaseModel):
    type: Literal["pair_phone"] = "pair_phone"
    phone: str


class DisconnectCommand(BaseModel):
    type: Literal["disconnect"] = "disconnect"


class LogoutCommand(BaseModel):
    type: Literal["logout"] = "logout"


Command = (
    SendTextCommand
    | SendMediaCommand
    | MarkReadCommand
    | RetryMediaCommand
    | ReactCommand
    | EditCommand
    | RevokeCommand
    | TypingCommand
    | PairPhoneCommand
    | DisconnectCommand
    | LogoutCommand
)


SendCommand = SendTextCommand | SendMediaCommand


class ServiceSendRequest(BaseModel):
    """A text send asked for by another service on ``svc.messaging.send``; the
    reply is a :class:`CommandReply` whose ``result`` is ``{message_id, status}``.
    ``client_id`` makes it idempotent exactly as for the API."""

    account_id: str
    device_id: str
    to: str
    body: str
    client_id: str
    priority: SendPriority = "bulk"
    # the id the message gets (the caller records it before asking, so that an
    # outcome arriving before the reply still finds its recipient)
    message_id: str | None = None


def outbound_envelope(account_id: str, device_id: str, command: SendCommand) -> Envelope[Any]:
    """A queued send: its id (and ``Nats-Msg-Id``) is the message id, the send's
    idempotency key from the API to WhatsApp."""
    return Envelope(
        id=command.message_id,
        type=command.type,
        account_id=account_id,
        device_id=device_id,
        data=command,
    )


class CommandReply(BaseModel):
    """``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": {code, message}}``.

    send_text/send_media/react/edit/revoke answer ``result = {"wa_message_id",
    "sent_at"}`` (for react/edit/revoke: the id of that protocol message);
    pair_phone answers ``result = {"pairing_code"}``.
    """

    ok: bool
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
