"""Shapes of the webhooks API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator

from clarin_common.events import AppType

# The WebSocket event types of the contract. ``AppType`` lists the ones the
# services publish today; the rest are announced by API.md and accepted already,
# so that a webhook can subscribe before the service that emits them ships.
CONTRACT_EVENT_TYPES = (
    "chat_updated",
    "message_updated",
    "presence",
    "campaign_progress",
    "history_synced",
)
EVENT_TYPES: tuple[str, ...] = tuple(sorted(set(get_args(AppType)) | set(CONTRACT_EVENT_TYPES)))
ALL_EVENTS = "*"

MAX_URL_LENGTH = 2048
MAX_EVENTS = len(EVENT_TYPES)
SECRET_MIN, SECRET_MAX = 16, 256

DeliveryStatus = Literal["pending", "sending", "delivered", "failed"]


def _url(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("A webhook needs a URL")
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"At most {MAX_URL_LENGTH} characters")
    if any(c.isspace() for c in value):
        raise ValueError("A URL has no spaces")
    return value


def normalize_events(value: list[str]) -> list[str]:
    """Known types, deduplicated, in the order given; ``["*"]`` stands alone."""
    events: list[str] = []
    for raw in value:
        name = raw.strip()
        if name == ALL_EVENTS:
            return [ALL_EVENTS]
        if name not in EVENT_TYPES:
            raise ValueError(f"Unknown event type {name!r}; one of: *, {', '.join(EVENT_TYPES)}")
        if name not in events:
            events.append(name)
    if not events:
        raise ValueError('Pick at least one event type, or "*" for all')
    return events


def _secret(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None  # a cleared form field: one is generated
    if not SECRET_MIN <= len(value) <= SECRET_MAX:
        raise ValueError(f"A secret has {SECRET_MIN} to {SECRET_MAX} characters")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("A secret has no spaces or control characters")
    return value


Url = Annotated[str, AfterValidator(_url)]
Events = Annotated[list[str], AfterValidator(normalize_events)]
Secret = Annotated[str | None, AfterValidator(_secret)]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    events: Events
    secret: Secret = None


class WebhookUpdate(BaseModel):
    """Any subset; a field sent as null is refused (there is nothing to clear)."""

    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    events: Events | None = None
    active: bool | None = None

    @field_validator("url", "events", "active", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # runs only for fields that were sent
        if value is None:
            raise ValueError("Cannot be null")
        return value


class Webhook(BaseModel):
    id: str
    url: str
    events: list[str]
    active: bool
    created_at: datetime


class WebhookCreated(Webhook):
    """A new webhook with its secret: the only time the secret is shown."""

    secret: str


class WebhookList(BaseModel):
    items: list[Webhook]


class EventTypeList(BaseModel):
    items: list[str]


class Delivery(BaseModel):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    status_code: int | None
    attempt: int
    error: str | None
    created_at: datetime
    delivered_at: datetime | None
    next_attempt_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None
