from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

SHORTCUT_PATTERN = r"^[A-Za-z0-9_-]+$"
SHORTCUT_MAX = 40
BODY_MAX = 4096


class QuickReply(BaseModel):
    id: str
    shortcut: str
    body: str
    created_at: datetime


class QuickReplyList(BaseModel):
    items: list[QuickReply]


def _body(value: str) -> str:
    if not value.strip():
        raise ValueError("The reply needs some text")
    return value


class QuickReplyCreate(BaseModel):
    shortcut: str = Field(min_length=1, max_length=SHORTCUT_MAX, pattern=SHORTCUT_PATTERN)
    body: str = Field(min_length=1, max_length=BODY_MAX)

    _check_body = field_validator("body")(_body)


class QuickReplyUpdate(BaseModel):
    """Any subset of the create fields."""

    shortcut: str | None = Field(
        default=None, min_length=1, max_length=SHORTCUT_MAX, pattern=SHORTCUT_PATTERN
    )
    body: str | None = Field(default=None, min_length=1, max_length=BODY_MAX)

    @field_validator("shortcut", "body")
    @classmethod
    def _not_null(cls, value: str | None) -> str:
        # runs only for values the body gave: null is an explicit null
        if value is None:
            raise ValueError("Cannot be null")
        return value

    _check_body = field_validator("body")(_body)
