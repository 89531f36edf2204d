from __future__ import annotations

import re
import uuid
from typing import Any

from pydantic import BaseModel, Field, field_validator

from clarin_common.contract import Chat, ChatStatus
from clarin_messaging.convert import MessageOut
from clarin_messaging.messages.schemas import BODY_MAX, CLIENT_ID_MAX

LABEL_MAX = 40
LABELS_MAX = 20
_SPACES = re.compile(r"\s+")


class ChatPage(BaseModel):
    items: list[Chat]
    next_cursor: str | None


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None


def normalize_label(value: str) -> str:
    """Labels compare as the agent reads them: trimmed, single spaces, lower case."""
    return _SPACES.sub(" ", value).strip().lower()


class ChatPatch(BaseModel):
    """``{status?, assigned_to?, labels?}``; ``assigned_to: null`` unassigns."""

    status: ChatStatus | None = None
    assigned_to: uuid.UUID | None = None
    labels: list[str] | None = Field(default=None, max_length=LABELS_MAX)

    @field_validator("status", "labels")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # runs only for values the body gave: null is an explicit null
        if value is None:
            raise ValueError("Cannot be null")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        labels: list[str] = []
        for raw in value:
            label = normalize_label(raw)
            if not label or len(label) > LABEL_MAX:
                raise ValueError(f"Each label has 1 to {LABEL_MAX} characters")
            if any(not ch.isprintable() for ch in label):
                raise ValueError("Labels are plain text")
            if label not in labels:
                labels.append(label)
        return labels

    def given(self, name: str) -> bool:
        return name in self.model_fields_set


class NoteRequest(BaseModel):
    body: str = Field(min_length=1, max_length=BODY_MAX)
    client_id: str | None = Field(default=None, min_length=1, max_length=CLIENT_ID_MAX)

    @field_validator("body")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("A note needs some text")
        return value


class UnreadCounts(BaseModel):
    """Chats with something unread in each inbox tab."""

    all: int
    mine: int
    unassigned: int


class LabelCount(BaseModel):
    label: str
    chats: int


class LabelList(BaseModel):
    items: list[LabelCount]
