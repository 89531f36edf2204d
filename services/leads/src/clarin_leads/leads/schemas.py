"""Request shapes of the leads API (answers use ``clarin_common.contract.Lead``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, Field, field_validator

from clarin_common.contract import Lead
from clarin_common.ids import phone_digits

MAX_TAGS = 50
MAX_TAG_LENGTH = 50


def _optional_text(max_length: int) -> AfterValidator:
    def check(value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            return None  # a cleared form field
        if len(value) > max_length:
            raise ValueError(f"At most {max_length} characters")
        return value

    return AfterValidator(check)


def _name(value: str | None) -> str:
    value = (value or "").strip()
    if not value:
        raise ValueError("A lead needs a name")
    if len(value) > 200:
        raise ValueError("At most 200 characters")
    return value


def normalize_phone(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    digits = phone_digits(value)
    if not 7 <= len(digits) <= 15:
        raise ValueError("Phone numbers have 7 to 15 digits in international format")
    return digits


def _email(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"Not a valid email address: {exc}") from exc


def normalize_tags(value: list[str] | None) -> list[str]:
    """Trimmed, without blanks, deduplicated case-insensitively (first spelling wins)."""
    tags: list[str] = []
    seen: set[str] = set()
    for raw in value or []:
        tag = raw.strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            raise ValueError(f"A tag has at most {MAX_TAG_LENGTH} characters")
        if tag.casefold() in seen:
            continue
        seen.add(tag.casefold())
        tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise ValueError(f"At most {MAX_TAGS} tags")
    return tags


Name = Annotated[str | None, AfterValidator(_name)]
Phone = Annotated[str | None, AfterValidator(normalize_phone)]
Email = Annotated[str | None, AfterValidator(_email)]
Company = Annotated[str | None, _optional_text(200)]
Notes = Annotated[str | None, _optional_text(10_000)]
Tags = Annotated[list[str] | None, AfterValidator(normalize_tags)]
Value = Annotated[float | None, Field(ge=0, le=1e13, allow_inf_nan=False)]


class _LeadFields(BaseModel):
    """What a client may write of a lead, besides its name."""

    phone: Phone = None
    email: Email = None
    company: Company = None
    stage: str | None = None
    tags: Tags = None
    notes: Notes = None
    value: Value = None
    assigned_to: str | None = None


class LeadCreate(_LeadFields):
    name: Name


class LeadUpdate(_LeadFields):
    """Any subset of the create fields; an explicit null clears an optional field."""

    name: Name = None

    @field_validator("stage")
    @classmethod
    def _stage_not_null(cls, value: str | None) -> str:
        # runs only when the field is sent: a lead always has a stage
        if value is None or not value.strip():
            raise ValueError("A lead always has a stage")
        return value.strip()

    def changes(self) -> dict[str, object]:
        """The fields the client sent, with their validated values."""
        values = self.model_dump(include=self.model_fields_set)
        if "tags" in values and values["tags"] is None:
            values["tags"] = []
        return values


@dataclass(frozen=True)
class LeadFilters:
    stage: str | None = None
    tag: str | None = None
    q: str | None = None
    assigned_to: str | None = None


class LeadPage(BaseModel):
    items: list[Lead]
    next_cursor: str | None
