from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from clarin_common.events import SendPriority

BODY_MAX = 65536
CLIENT_ID_MAX = 128


class SendTextRequest(BaseModel):
    """``{device_id, to, body, client_id?}`` or ``{chat_id, body, client_id?}``."""

    chat_id: uuid.UUID | None = None
    device_id: uuid.UUID | None = None
    to: str | None = Field(default=None, min_length=1, max_length=320)
    body: str = Field(min_length=1, max_length=BODY_MAX)
    client_id: str | None = Field(default=None, min_length=1, max_length=CLIENT_ID_MAX)
    # bulk sends (campaigns) wait behind the device's interactive ones
    priority: SendPriority = "interactive"
