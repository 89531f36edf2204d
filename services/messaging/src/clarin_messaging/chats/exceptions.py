"""The errors of chats (rendered by the common handler)."""

from __future__ import annotations

from clarin_common.errors import NotFound


class ChatNotFound(NotFound):
    code = "chat_not_found"
    message = "Chat not found"
