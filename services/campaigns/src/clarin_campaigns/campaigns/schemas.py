"""Request and answer shapes of the campaigns API (``Campaign`` is in the contract)."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from clarin_common.contract import Audience, Campaign

RecipientStatus = Literal[
    "waiting", "sending", "queued", "sent", "delivered", "read", "failed", "skipped", "cancelled"
]
OPT_OUT_TAG = "opt-out"
SkipReason = Literal["opt-out", "no_phone"]


class AudienceIn(Audience):
    """Given leads, or the leads of a stage and/or a tag (not both ways at once)."""

    @field_validator("lead_ids")
    @classmethod
    def _ids(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("Name at least one lead")
        try:
            return list(dict.fromkeys(str(uuid.UUID(v)) for v in value))
        except ValueError as exc:
            raise ValueError("Lead ids are UUIDs") from exc

    @field_validator("stage", "tag")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        return value or None

    @model_validator(mode="after")
    def _one_way(self) -> AudienceIn:
        if self.lead_ids is not None and (self.stage or self.tag):
            raise ValueError("Give lead_ids, or stage and/or tag, not both")
        if self.lead_ids is None and not (self.stage or self.tag):
            raise ValueError("Give lead_ids, a stage or a tag")
        return self


class CampaignCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    device_id: uuid.UUID
    body: str = Field(min_length=1, max_length=4096)
    audience: AudienceIn
    per_minute: int | None = Field(default=None, ge=1, le=60)


class AudienceQuery(BaseModel):
    audience: AudienceIn


class PreviewRecipient(BaseModel):
    lead_id: str
    name: str
    phone: str | None
    skipped: SkipReason | None = None


class AudiencePreview(BaseModel):
    """``total`` leads to write to, ``skipped`` left out, and the first few of each."""

    total: int
    skipped: int
    sample: list[PreviewRecipient]


class Recipient(BaseModel):
    lead_id: str
    name: str
    phone: str | None
    status: RecipientStatus
    message_id: str | None = None
    error: str | None = None


class CampaignPage(BaseModel):
    items: list[Campaign]
    next_cursor: str | None


class RecipientPage(BaseModel):
    items: list[Recipient]
    next_cursor: str | None
