"""WhatsApp events as neonize hands them over → Clarin's event payloads.

Pure functions over neonize's protobuf objects (duck-typed: nothing here imports
neonize, so the worker process can use it without loading Go). The host
(:mod:`.neonize_host`) calls them on its Go callback threads; the one lookup
that needs Go (the store's LID map) is passed in as a function.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Parties:
    """Who a MessageEv is between: its chat and its sender, in both forms."""

    chat: Address
    sender: Address | None
    is_group: bool
    from_me: bool

    def ends(self) -> dict[str, Any]:
        """The chat and sender fields of an edit, revoke or reaction."""
        return {
            "chat_jid": self.chat.jid,
            "chat_lid": self.chat.lid,
            "sender_jid": self.sender.jid if self.sender else None,
            "sender_lid": self.sender.lid if self.sender else None,
            "from_me": self.from_me,
        }

    def fields(self) -> dict[str, Any]:
        return {
            "chat_jid": self.chat.jid,
            "chat_lid": self.chat.lid,
            "sender_jid": self.sender.jid if self.sender else None,
            "sender_lid": self.sender.lid if self.sender else None,
            "direction": "out" if self.from_me else "in",
            "is_group": self.is_group,
        }


def parties(info: Any, lookup: Callable[[str], str | None]) -> Parties | None:
    """The chat and sender of a MessageEv's ``Info``; None for what is not a
    conversation (status posts)."""
    source = info.MessageSource
    chat_raw = jid_string(source.Chat)
    if chat_raw is None or normalize_jid(chat_raw) == STATUS_BROADCAST:
        return None
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
    return Parties(chat=chat, sender=sender, is_group=is_group, from_me=bool(source.IsFromMe))


def message_payload(
    info: Any,
    message: Any,
    kind: tuple[str, str | None, str | None],
    lookup: Callable[[str], str | None],
    own: str | None = None,
) -> dict[str, Any] | None:
    """A ``WaMessage`` (as JSON data) for a MessageEv; None for what is not a
    conversation (status posts)."""
    who = parties(info, lookup)
    if who is None:
        return None
    type_, body, media_field = kind
    payload: dict[str, Any] = {
        "wa_message_id": info.ID,
        **who.fields(),
        "push_name": info.Pushname or None,
        "type": type_,
        "body": body,
        "sent_at": proto_time(info.Timestamp).isoformat(),
    }
    if media_field is not None:
        payload["media_info"] = media_info(type_, getattr(message, media_field))
    reply_to = quoted(message, own)
    if reply_to is not None:
        payload["reply_to"] = reply_to
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


# ---- what a phone sends besides messages: quotes, reactions, edits, deletes ------

PROTOCOL_REVOKE = 0  # waE2E ProtocolMessage.Type
PROTOCOL_MESSAGE_EDIT = 14
PRESENCE_STATES = {1: "composing", 2: "paused"}  # neonize ChatPresence.State (proto2: from 1)
QUOTABLE_TYPES = frozenset(
    {"text", "image", "video", "audio", "document", "sticker", "location", "contact", "unknown"}
)


def event_kind(message: Any) -> str | None:
    """What an (unwrapped) waE2E Message is to a conversation: ``message``,
    ``reaction``, ``edit``, ``revoke``, or None when nothing shows."""
    if message_has(message, "reactionMessage"):
        return "reaction" if message.reactionMessage.key.ID else None
    if message_has(message, "protocolMessage"):
        protocol = message.protocolMessage
        if not protocol.key.ID:
            return None
        if protocol.type == PROTOCOL_MESSAGE_EDIT and protocol.HasField("editedMessage"):
            return "edit"
        if protocol.type == PROTOCOL_REVOKE:
            return "revoke"
        return None  # history notifications, key shares, ephemeral settings …
    return "message" if classify(message) is not None else None


def context_info(message: Any) -> Any | None:
    """The ``contextInfo`` of a message's content part (text, image, …), if any."""
    for fd, value in message.ListFields():
        sub = fd.message_type
        if sub is None or "contextInfo" not in sub.fields_by_name:
            continue
        if value.HasField("contextInfo"):
            return value.contextInfo
    return None


def quoted(message: Any, own: str | None) -> dict[str, Any] | None:
    """``WaMessage.reply_to`` of a reply: the quoted message's id (``stanzaID``,
    in the same chat), its author (``participant``; ``from_me`` when that is
    ``own``, the linked number) and its text, kept as a preview for a quote of
    a message we never saw."""
    ctx = context_info(message)
    if ctx is None or not ctx.stanzaID:
        return None
    type_, preview = "text", None
    if ctx.HasField("quotedMessage"):
        kind = classify(unwrap(ctx.quotedMessage))
        if kind is not None:
            type_, preview = kind[0], kind[1]
    if type_ not in QUOTABLE_TYPES:
        type_ = "unknown"
    author = normalize_jid(ctx.participant) if ctx.participant else None
    return {
        "wa_message_id": ctx.stanzaID,
        "from_me": author is not None and own is not None and author == normalize_jid(own),
        "sender_jid": author,
        "body": preview,
        "type": type_,
    }


def _event_time(ms: int, info: Any) -> str:
    return (proto_time(ms) if ms > 0 else proto_time(info.Timestamp)).isoformat()


def reaction_payload(
    info: Any, message: Any, lookup: Callable[[str], str | None]
) -> dict[str, Any] | None:
    """A ``WaReaction``: ``wa_message_id`` is the message reacted to, ``emoji``
    empty when the sender took their reaction back (one per sender and
    message: a new one replaces it)."""
    who = parties(info, lookup)
    if who is None:
        return None
    reaction = message.reactionMessage
    return {
        "wa_message_id": reaction.key.ID,
        **who.ends(),
        "emoji": reaction.text,
        "reacted_at": _event_time(reaction.senderTimestampMS, info),
        "reaction_id": info.ID,
    }


def edit_payload(
    info: Any, message: Any, lookup: Callable[[str], str | None]
) -> dict[str, Any] | None:
    """A ``WaEdit``: the edited message (maybe one we never saw) and its new
    text; ``edit_id`` is the id of the edit itself."""
    who = parties(info, lookup)
    if who is None:
        return None
    protocol = message.protocolMessage
    kind = classify(unwrap(protocol.editedMessage))
    return {
        "wa_message_id": protocol.key.ID,
        **who.ends(),
        "body": kind[1] if kind is not None else None,
        "edited_at": _event_time(protocol.timestampMS, info),
        "edit_id": info.ID,
    }


def revoke_payload(
    info: Any, message: Any, lookup: Callable[[str], str | None]
) -> dict[str, Any] | None:
    """A ``WaRevoke`` (delete for everyone). ``sender_jid`` is who deleted it:
    its author, or in a group an admin (whatsmeow marks that ``Edit`` "8"; the
    key's ``participant`` is then the author, who differs from the sender)."""
    who = parties(info, lookup)
    if who is None:
        return None
    return {
        "wa_message_id": message.protocolMessage.key.ID,
        **who.ends(),
        "revoked_at": proto_time(info.Timestamp).isoformat(),
        "revoke_id": info.ID,
    }


def chat_presence_payload(event: Any, lookup: Callable[[str], str | None]) -> dict[str, Any] | None:
    """A ``WaPresence`` for a ChatPresence: typing (or recording: WhatsApp's
    ``Media`` audio) or stopped, in one chat."""
    who = parties(event, lookup)
    if who is None or who.from_me:
        return None
    state = PRESENCE_STATES.get(int(event.State))
    if state is None:
        return None
    return {
        "chat_jid": who.chat.jid,
        "chat_lid": who.chat.lid,
        "sender_jid": who.sender.jid if who.sender else None,
        "state": state,
        "at": datetime.now(UTC).isoformat(),
    }


def presence_payload(event: Any, lookup: Callable[[str], str | None]) -> dict[str, Any] | None:
    """A ``WaPresence`` for a Presence: a contact came online or went away
    (their one-to-one chat)."""
    raw = jid_string(event.From)
    if raw is None:
        return None
    address = resolve(raw, None, lookup)
    if address is None or server_of(address.jid) not in (PHONE_SERVER, LID_SERVER):
        return None
    return {
        "chat_jid": address.jid,
        "chat_lid": address.lid,
        "sender_jid": address.jid,
        "state": "unavailable" if event.Unavailable else "available",
        "at": datetime.now(UTC).isoformat(),
    }


def presence_lookups(event: Any) -> list[str]:
    """LIDs of a ChatPresence/Presence that need the store's map."""
    if hasattr(event, "MessageSource"):
        return lid_lookups(event)
    raw = jid_string(event.From)
    return [normalize_jid(raw)] if raw and server_of(raw) == LID_SERVER else []


# ---- history sync: what the phone sends after linking ----------------------------------

# HistorySync.HistorySyncType values whose conversations carry messages:
# INITIAL_BOOTSTRAP (0: the recent chats), FULL (2), RECENT (3: more of the recent
# messages, in chunks), ON_DEMAND (6). INITIAL_STATUS_V3 (1) holds status posts,
# PUSH_NAME (4) only names, NON_BLOCKING_DATA (5) settings and past participants.
HISTORY_WITH_MESSAGES = frozenset({0, 2, 3, 6})
HISTORY_PUSH_NAMES = 4
_STUB_REVOKE = 1  # WebMessageInfo.StubType.REVOKE: a message deleted for everyone


def json_bound(message: dict[str, Any]) -> int:
    """An upper bound of a mapped message's size as a JSON line: 1 KiB for its
    ids, JIDs and times, and 12 bytes for every character of its free text
    (``json.dumps`` writes an emoji as two ``\\uXXXX``)."""
    size = 1024
    for text in (message.get("body"), message.get("push_name")):
        if text:
            size += 12 * len(text)
    reply_to = message.get("reply_to")
    if reply_to and reply_to.get("body"):
        size += 12 * len(reply_to["body"])
    info = message.get("media_info")
    if info:
        size += 12 * len(info.get("file_name") or "") + len(info.get("download") or "")
    return size


@dataclass
class HistoryMapper:
    """Turns HistorySync blobs of one session into ``WaMessage`` data and chats.

    Keeps what one blob teaches for the next ones: push names (a PUSH_NAME blob
    may come before or after the messages) and the LID ↔ phone pairs
    (``phoneNumberToLidMappings``, a conversation's ``pnJID``/``lidJID``), so no
    call into Go is needed. Messages older than ``since`` are left out."""

    since: datetime
    own: str | None = None  # the linked number's JID: quotes of our messages
    push_names: dict[str, str] = field(default_factory=dict)
    pn_of_lid: dict[str, str] = field(default_factory=dict)

    def learn(self, data: Any) -> None:
        for pair in data.phoneNumberToLidMappings:
            if pair.pnJID and pair.lidJID:
                self.pn_of_lid[normalize_jid(pair.lidJID)] = normalize_jid(pair.pnJID)
        for entry in data.pushnames:
            if entry.ID and entry.pushname:
                self.push_names[normalize_jid(entry.ID)] = entry.pushname
        for conv in data.conversations:
            if conv.lidJID and conv.pnJID:
                self.pn_of_lid[normalize_jid(conv.lidJID)] = normalize_jid(conv.pnJID)
            elif conv.pnJID and conv.ID and server_of(conv.ID) == LID_SERVER:
                self.pn_of_lid[normalize_jid(conv.ID)] = normalize_jid(conv.pnJID)

    def address(self, raw: str) -> Address:
        jid = normalize_jid(raw)
        if server_of(jid) != LID_SERVER:
            return Address(jid=jid, lid=None)
        return Address(jid=self.pn_of_lid.get(jid, jid), lid=jid)

    def conversations(self, data: Any) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """(chat, its messages oldest first) for every conversation with a
        message in the window, one at a time (the first batch need not wait
        for the whole blob); nothing for blobs without messages."""
        self.learn(data)
        if int(data.syncType) not in HISTORY_WITH_MESSAGES:
            return
        for conv in data.conversations:
            if not conv.ID or normalize_jid(conv.ID) == STATUS_BROADCAST:
                continue
            chat = self.address(conv.ID)
            is_group = server_of(chat.jid) == "g.us"
            messages = []
            for item in conv.messages:
                payload = self.message(item.message, chat, is_group)
                if payload is not None:
                    messages.append(payload)
            if not messages:
                continue
            messages.sort(key=lambda m: m["sent_at"])
            name = conv.name or conv.displayName or None
            if not is_group and name is None:
                name = self.push_names.get(chat.jid) or (
                    self.push_names.get(chat.lid) if chat.lid else None
                )
            chat_data = {
                "chat_jid": chat.jid,
                "chat_lid": chat.lid,
                "is_group": is_group,
                "name": name,
            }
            yield chat_data, messages

    def message(self, web: Any, chat: Address, is_group: bool) -> dict[str, Any] | None:
        key = web.key
        if not key.ID or not web.HasField("message"):
            return None  # stubs (group changes, calls, deleted messages) show nothing
        seconds = int(web.messageTimestamp)
        if seconds <= 0:
            return None
        sent_at = datetime.fromtimestamp(seconds, UTC)
        if sent_at < self.since:
            return None
        if int(web.messageStubType) == _STUB_REVOKE:
            return None
        message = unwrap(web.message)
        if event_kind(message) != "message":
            return None  # reactions, edits, protocol messages: already applied by the phone
        kind = classify(message)
        assert kind is not None
        type_, body, media_field = kind
        from_me = bool(key.fromMe)
        if from_me:
            sender: Address | None = None
        elif is_group:
            raw = key.participant or web.participant
            sender = self.address(raw) if raw else None
        else:
            sender = chat
        push_name = web.pushName or None
        if push_name is None and sender is not None:
            push_name = self.push_names.get(sender.jid) or (
                self.push_names.get(sender.lid) if sender.lid else None
            )
        payload: dict[str, Any] = {
            "wa_message_id": key.ID,
            "chat_jid": chat.jid,
            "chat_lid": chat.lid,
            "sender_jid": sender.jid if sender else None,
            "sender_lid": sender.lid if sender else None,
            "push_name": push_name,
            "direction": "out" if from_me else "in",
            "type": type_,
            "body": body,
            "is_group": is_group,
            "sent_at": sent_at.isoformat(),
        }
        if media_field is not None:
            payload["media_info"] = media_info(type_, getattr(message, media_field))
        reply_to = quoted(message, self.own)
        if reply_to is not None:
            payload["reply_to"] = reply_to
        return payload
