from __future__ import annotations

from pydantic import BaseModel

from clarin_common.contract import Chat
from clarin_messaging.convert import MessageOut


class SearchHit(BaseModel):
    message: MessageOut
    chat: Chat


class SearchPage(BaseModel):
    items: list[SearchHit]
    next_cursor: str | None
