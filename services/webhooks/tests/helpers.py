"""Typed helpers of the webhooks tests: tenants, application events as the other
services publish them, the API's answers as typed dicts, fast settings."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from nats.aio.client import Client as NatsClient
from pydantic import BaseModel, TypeAdapter
from typing_extensions import TypedDict

from clarin_common.events import AppType, ChatReadData, app_envelope, app_event_subject
from clarin_common.nats import publish_event
from clarin_devkit.testing import auth_headers, eventually, make_token
from clarin_webhooks.settings import WebhooksSettings

# retries in fractions of a second
FAST: dict[str, float] = {
    "retry_base_seconds": 0.2,
    "retry_max_interval_seconds": 0.5,
    "retry_jitter": 0.0,
    "delivery_timeout_seconds": 2.0,
    "poll_interval_seconds": 0.05,
}


# A keyword override's value has the type of the setting it names (pydantic checks it).
def fast_settings(**overrides: Any) -> WebhooksSettings:
    """Settings with :data:`FAST` retries; keyword arguments override any setting."""
    return WebhooksSettings(**{**FAST, **overrides})


class SettingsMaker(Protocol):
    def __call__(self, **overrides: Any) -> WebhooksSettings: ...


@dataclass(frozen=True)
class Tenant:
    """An account and its admin's token."""

    account_id: str
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return auth_headers(self.token)

    @property
    def agent_headers(self) -> dict[str, str]:
        """A token of another user of the account, an agent (webhooks are admin only)."""
        return auth_headers(make_token(self.account_id, str(uuid.uuid4()), role="agent"))


def new_tenant() -> Tenant:
    account_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
    return Tenant(account_id, user_id, make_token(account_id, user_id))


class WebhookJson(TypedDict):
    id: str
    url: str
    events: list[str]
    active: bool
    created_at: str


class CreatedWebhookJson(WebhookJson):
    secret: str


class DeliveryJson(TypedDict):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: str
    status_code: int | None
    attempt: int
    error: str | None
    created_at: str
    delivered_at: str | None
    next_attempt_at: str | None


_WEBHOOK = TypeAdapter(WebhookJson)
_CREATED = TypeAdapter(CreatedWebhookJson)
_DELIVERIES = TypeAdapter(list[DeliveryJson])
_DELIVERY = TypeAdapter(DeliveryJson)


def webhook_of(resp: httpx.Response) -> WebhookJson:
    assert resp.status_code == 200, resp.text
    return _WEBHOOK.validate_python(resp.json())


def delivery_of(resp: httpx.Response, status_code: int = 202) -> DeliveryJson:
    assert resp.status_code == status_code, resp.text
    return _DELIVERY.validate_python(resp.json())


async def create_webhook(
    client: httpx.AsyncClient,
    tenant: Tenant,
    url: str,
    events: list[str] | None = None,
    secret: str | None = None,
) -> CreatedWebhookJson:
    """``POST /api/webhooks`` that must succeed; the created webhook, secret included."""
    body: dict[str, str | list[str]] = {"url": url, "events": events or ["*"]}
    if secret is not None:
        body["secret"] = secret
    resp = await client.post("/api/webhooks", json=body, headers=tenant.headers)
    assert resp.status_code == 201, resp.text
    return _CREATED.validate_python(resp.json())


async def deliveries_of(
    client: httpx.AsyncClient, tenant: Tenant, webhook: WebhookJson
) -> list[DeliveryJson]:
    """The webhook's delivery log, newest first (one page of up to 200)."""
    resp = await client.get(
        f"/api/webhooks/{webhook['id']}/deliveries", params={"limit": 200}, headers=tenant.headers
    )
    assert resp.status_code == 200, resp.text
    return _DELIVERIES.validate_python(resp.json()["items"])


@dataclass(frozen=True)
class WebhookMaker:
    """``await make_webhook(tenant, url, events=["*"])`` on the test's app."""

    client: httpx.AsyncClient

    async def __call__(
        self,
        tenant: Tenant,
        url: str,
        events: list[str] | None = None,
        secret: str | None = None,
    ) -> CreatedWebhookJson:
        return await create_webhook(self.client, tenant, url, events, secret)


class AppEvents:
    """Publishes ``app.{account}.{type}`` events as the services do after commit."""

    def __init__(self, nc: NatsClient) -> None:
        self.js = nc.jetstream()

    async def chat_read(self, account_id: str, chat_id: str | None = None) -> str:
        return await self.publish(account_id, "chat_read", ChatReadData(chat_id=chat_id or "c1"))

    async def publish(self, account_id: str, type_: AppType, data: BaseModel) -> str:
        """Publish one event; its id."""
        env = app_envelope(account_id, type_, data)
        await publish_event(self.js, app_event_subject(account_id, type_), env)
        return env.id


async def newest_delivery(
    client: httpx.AsyncClient,
    tenant: Tenant,
    webhook: WebhookJson,
    condition: Callable[[DeliveryJson], bool],
    timeout: float = 5.0,
) -> DeliveryJson:
    """Wait until the newest delivery in the webhook's log meets ``condition``; it."""

    async def met() -> DeliveryJson | None:
        items = await deliveries_of(client, tenant, webhook)
        return items[0] if items and condition(items[0]) else None

    delivery = await eventually(met, timeout=timeout)
    assert delivery is not None  # eventually answers only a truthy value
    return delivery
