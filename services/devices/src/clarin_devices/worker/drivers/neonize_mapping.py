"""WhatsApp events as neonize hands them over → Clarin's event payloads.

Pure functions over neonize's protobuf objects (duck-typed: nothing here imports
neonize, so the worker process can use it without loading Go). The host
(:mod:`.neonize_host`) calls them on its Go callback threads; the one lookup
that needs Go (the store's LID map) is passed in as a function.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clarin_common.ids import normalize_jid, phone_from_jid

PHONE_SERVER = "s.whatsapp.net"
LID_SERVER = "lid"
STATUS_BROADCAST = "status@broadcast"
RECEIPT_STATUS = {1: "delivered", 4: "read", 6: "played"}  # neonize ReceiptType

MEDIA_FIELDS = {
    "imageMessage": "image",
    "videoMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "stickerMessage": "sticker",
}
_WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
    "editedMessage",
)
# parts of a message that carry nothing a user would see
_INVISIBLE = {"senderKeyDistributionMessage", "messageContextInfo", "protocolMessage"}


def proto_time(value: int) -> datetime:
    """A neonize timestamp as an aware datetime: seconds in some versions,
    milliseconds in others (``UnixMilli``), 0 when unknown."""
    if value <= 0:
        return datetime.now(UTC)
    if value > 100_000_000_000:  # after 5138 in seconds: it is milliseconds
        return datetime.fromtimestamp(value / 1000, UTC)
    return datetime.fromtimestamp(value, UTC)


def jid_string(jid: Any) -> str | None:
    """A neonize ``JID`` as ``user[:device]@server``; None when empty."""
    if jid is None or not jid.User or not jid.Server:
        return None
    device = f":{jid.Device}" if jid.Device else ""
    return f"{jid.User}{device}@{jid.Server}"


def server_of(jid: str) -> str:
    return jid.partition("@")[2].lower()


def unwrap(message: Any) -> Any:
    for _ in range(4):
        for name in _WRAPPERS:
            if message.HasField(name) and message_has(getattr(message, name), "message"):
                message = getattr(message, name).message
                break
        else:
            return message
    return message


def message_has(message: Any, name: str) -> bool:
    try:
        return bool(message.HasField(name))
    except ValueError:
        return False


def classify(message: Any) -> tuple[str, str | None, str | None] | None:
    """(type, body, media field) of a waE2E Message, or None when nothing shows."""
    names = {fd.name for fd, _ in message.ListFields()}
    if not names - _INVISIBLE:
        return None
    for name, kind in MEDIA_FIELDS.items():
        if name in names:
            sub = getattr(message, name)
            caption = getattr(sub, "caption", "") or None
            return kind, caption, name
    if "conversation" in names:
        return "text", message.conversation, None
    if "extendedTextMessage" in names:
        return "text", message.extendedTextMessage.text, None
    if "locationMessage" in names or "liveLocationMessage" in names:
        loc = message.locationMessage if "locationMessage" in names else message.liveLocationMessage
        parts = [f"{loc.degreesLatitude},{loc.degreesLongitude}"]
        for extra in ("name", "address"):
            value = getattr(loc, extra, "")
            if value:
                parts.append(value)
        return "location", " ".join(parts), None
    if "contactMessage" in names:
        contact = message.contactMessage
        return "contact", contact.vcard or contact.displayName or None, None
    if "contactsArrayMessage" in names:
        contacts = message.contactsArrayMessage
        return "contact", "\n".join(c.vcard for c in contacts.contacts) or None, None
    if "reactionMessage" in names:
        return "reaction", message.reactionMessage.text or None, None
    return "unknown", None, None


# ---- contact identity: phone number and LID ---------------------------------------


@dataclass(frozen=True)
class Address:
    """One person as WhatsApp addressed them: the phone form when known, the
    LID form when known (at least one of the two)."""

    jid: str  # phone form when known, else the LID
    lid: str | None


def resolve(
    primary: str | None, alt: str | None, pn_from_lid: Callable[[str], str | None]
) -> Address | None:
    """The phone and LID forms of one address. ``primary`` is what the message
    is addressed by (``Chat``/``Sender``), ``alt`` the other form WhatsApp sent
    along (``SenderAlt``/``RecipientAlt``); when a LID came without its phone,
    the store's LID map (``pn_from_lid``) is asked."""
    if primary is None:
        return None
    main = normalize_jid(primary)
    other = normalize_jid(alt) if alt else None
    if server_of(main) != LID_SERVER:
        lid = other if other and server_of(other) == LID_SERVER else None
        return Address(jid=main, lid=lid)
    phone = other if other and server_of(other) == PHONE_SERVER else None
    if phone is None:
        found = pn_from_lid(main)
        phone = normalize_jid(found) if found and server_of(found) == PHONE_SERVER else None
    return Address(jid=phone or main, lid=main)


def message_payload(
    info: Any,
    message: Any,
    kind: tuple[str, str | None, str | None],
    lookup: Callable[[str], str | None],
) -> dict[str, Any] | None:
    """A ``WaMessage`` (as JSON data) for a MessageEv; None for what is not a
    conversation (status posts)."""
    source = info.MessageSource
    chat_raw = jid_string(source.Chat)
    if chat_raw is None or normalize_jid(chat_raw) == STATUS_BROADCAST:
        return None
    type_, body, media_field = kind
    is_group = bool(source.IsGroup)
    sender_raw = jid_string(source.Sender)
    if is_group:
        chat = Address(jid=normalize_jid(chat_raw), lid=None)
    else:
        # one-to-one: the chat is the contact; their other form came as
        # SenderAlt (they wrote) or RecipientAlt (we wrote, from another device)
        alt = jid_string(source.RecipientAlt if source.IsFromMe else source.SenderAlt)
        resolved = resolve(chat_raw, alt, lookup)
        assert resolved is not None
        chat = resolved
    if source.IsFromMe:
        sender = Address(jid=normalize_jid(sender_raw), lid=None) if sender_raw else None
    elif not is_group:
        sender = chat
    else:
        sender = resolve(sender_raw, jid_string(source.SenderAlt), lookup)
    payload: dict[str, Any] = {
        "wa_message_id": info.ID,
        "chat_jid": chat.jid,
        "chat_lid": chat.lid,
        "sender_jid": sender.jid if sender else None,
        "sender_lid": sender.lid if sender else None,
        "push_name": info.Pushname or None,
        "direction": "out" if source.IsFromMe else "in",
        "type": type_,
        "body": body,
        "is_group": is_group,
        "sent_at": proto_time(info.Timestamp).isoformat(),
    }
    if media_field is not None:
        payload["media_info"] = media_info(type_, getattr(message, media_field))
    return payload


def lid_lookups(info: Any) -> list[str]:
    """The LIDs of a message whose phone form did not come along (they need the
    store's map, a call into Go)."""
    source = info.MessageSource
    pairs = [(source.Chat, source.RecipientAlt if source.IsFromMe else source.SenderAlt)]
    if source.IsGroup and not source.IsFromMe:
        pairs = [(source.Sender, source.SenderAlt)]
    found = []
    for primary, alt in pairs:
        main = jid_string(primary)
        if main and server_of(main) == LID_SERVER and jid_string(alt) is None:
            found.append(normalize_jid(main))
    return found


def phone_of(jid: str) -> str | None:
    return phone_from_jid(jid)


# ---- media: announced with the message, fetched afterwards -----------------------


def media_info(type_: str, sub: Any) -> dict[str, Any]:
    """``WaMessage.media_info`` of a media sub-message (imageMessage, …): what
    the user sees at once, and in ``download`` what fetching the file needs
    (read by :mod:`.neonize_media`, opaque to everyone else)."""
    download = {
        "type": type_,
        "direct_path": getattr(sub, "directPath", "") or None,
        "media_key": _b64(getattr(sub, "mediaKey", b"")),
        "file_sha256": _b64(getattr(sub, "fileSHA256", b"")),
        "file_enc_sha256": _b64(getattr(sub, "fileEncSHA256", b"")),
        "size": int(getattr(sub, "fileLength", 0) or 0) or None,
    }
    return {
        "mime_type": getattr(sub, "mimetype", "") or "application/octet-stream",
        "file_name": getattr(sub, "fileName", "") or None,
        "size": download["size"],
        "download": json.dumps(download, separators=(",", ":")),
    }


def _b64(value: bytes) -> str | None:
    import base64

    return base64.b64encode(value).decode() if value else None


def receipt_payload(event: Any) -> dict[str, Any] | None:
    status = RECEIPT_STATUS.get(int(event.Type))
    if status is None or not event.MessageIDs:
        return None
    source = event.MessageSource
    chat = jid_string(source.Chat)
    if chat is None or normalize_jid(chat) == STATUS_BROADCAST:
        return None
    sender = jid_string(source.Sender)
    return {
        "wa_message_ids": list(event.MessageIDs),
        "chat_jid": normalize_jid(chat),
        "sender_jid": normalize_jid(sender) if sender else None,
        "status": status,
        "receipt_at": proto_time(event.Timestamp).isoformat(),
    }
