from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

BODY_MAX = 65536
CLIENT_ID_MAX = 128


class SendTextRequest(BaseModel):
    """``{device_id, to, body, client_id?}`` or ``{chat_id, body, client_id?}``."""

    chat_id: uuid.UUID | None = None
    device_id: uuid.UUID | None = None
    to: str | None = Field(default=None, min_length=1, max_length=320)
    body: str = Field(min_length=1, max_length=BODY_MAX)
    client_id: str | None = Field(default=None, min_length=1, max_length=CLIENT_ID_MAX)
    # a message of the same chat that this one answers
    reply_to: uuid.UUID | None = None


class ReactRequest(BaseModel):
    """``{emoji}``; ``""`` removes our reaction."""

    emoji: str = Field(max_length=32)


class EditRequest(BaseModel):
    body: str = Field(min_length=1, max_length=BODY_MAX)


class TypingRequest(BaseModel):
    state: Literal["composing", "paused"]
