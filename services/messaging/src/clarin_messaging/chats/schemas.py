from __future__ import annotations

from pydantic import BaseModel

from clarin_common.contract import Chat
from clarin_messaging.convert import MessageOut


class ChatPage(BaseModel):
    items: list[Chat]
    next_cursor: str | None


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None
