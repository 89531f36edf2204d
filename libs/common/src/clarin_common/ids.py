"""Identifiers several contexts derive the same way, without asking each other."""

from __future__ import annotations

import re
import uuid

_CHAT_NAMESPACE = uuid.UUID("6f1c2b5e-3f0a-4c8e-9d51-2a7b1e0c9a44")
_DIGITS = re.compile(r"\D+")


def chat_id_for(device_id: str, chat_jid: str) -> str:
    """The chat of ``chat_jid`` on ``device_id``: messaging stores it under this
    id, and leads links a lead born from WhatsApp to it without a lookup."""
    return str(uuid.uuid5(_CHAT_NAMESPACE, f"{device_id}|{normalize_jid(chat_jid)}"))


def normalize_jid(jid: str) -> str:
    """``5215512345678:12@s.whatsapp.net`` → ``5215512345678@s.whatsapp.net`` (drops the
    device part, lowercases the server)."""
    user, _, server = jid.strip().partition("@")
    user = user.split(":", 1)[0]
    return f"{user}@{server.lower()}" if server else user


def phone_digits(value: str) -> str:
    """A phone number as international digits only (``+52 1 55-1234`` → ``52155 1234``)."""
    return _DIGITS.sub("", value)


def phone_from_jid(jid: str) -> str | None:
    user, _, server = normalize_jid(jid).partition("@")
    if server and server != "s.whatsapp.net":
        return None  # groups, broadcasts, lids carry no phone number
    digits = phone_digits(user)
    return digits or None


def jid_from_recipient(to: str) -> str:
    """``to`` of a send (digits or a JID) as a JID. Raises ValueError when neither."""
    to = to.strip()
    if "@" in to:
        return normalize_jid(to)
    digits = phone_digits(to)
    if not 7 <= len(digits) <= 15:
        raise ValueError("Phone numbers have 7 to 15 digits in international format")
    return f"{digits}@s.whatsapp.net"


def uuid_or(value: str, error: type[Exception]) -> str:
    """``value`` in canonical uuid form; anything else raises ``error()`` (ids are
    uuids: a malformed one names nothing, so it is simply not found)."""
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise error() from exc
