"""Fixtures of the webhooks tests: the app on real PostgreSQL/NATS with short retry
timings, a local receiver, tenants, and application events published as the
other services publish them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NatsClient

from clarin_common.events import ChatReadData, app_envelope, app_event_subject
from clarin_common.nats import publish_event
from clarin_devkit.testing import auth_headers, make_token, running_app
from clarin_devkit.testing.plugin import TestServers
from clarin_webhooks.main import create_app
from clarin_webhooks.settings import WebhooksSettings
from tests.webhook_receiver import Receiver, serving

FAST = {
    "retry_base_seconds": 0.2,
    "retry_max_interval_seconds": 0.5,
    "retry_jitter": 0.0,
    "delivery_timeout_seconds": 2.0,
    "poll_interval_seconds": 0.05,
}


def _fast_settings(**overrides: Any) -> WebhooksSettings:
    return WebhooksSettings(**{**FAST, **overrides})


@pytest.fixture(name="fast_settings")
def fast_settings_fixture() -> Callable[..., WebhooksSettings]:
    """Settings with retries in fractions of a second; keyword arguments override."""
    return _fast_settings


@dataclass
class Tenant:
    account_id: str
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return auth_headers(self.token)

    @property
    def agent_headers(self) -> dict[str, str]:
        return auth_headers(make_token(self.account_id, str(uuid.uuid4()), role="agent"))


@pytest.fixture
def new_tenant() -> Callable[[], Tenant]:
    def make() -> Tenant:
        account_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
        return Tenant(account_id, user_id, make_token(account_id, user_id))

    return make


@pytest.fixture
async def client(clean_state: None, test_servers: TestServers) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(_fast_settings())) as http:
        yield http


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(Receiver()) as running:
        yield running


@pytest.fixture
async def db(test_servers: TestServers) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(test_servers.database_url)
    await conn.execute("SET search_path = webhooks")
    yield conn
    await conn.close()


class AppEvents:
    """Publishes ``app.{account}.{type}`` events as the services do after commit."""

    def __init__(self, nc: NatsClient) -> None:
        self.js = nc.jetstream()

    async def chat_read(self, account_id: str, chat_id: str | None = None) -> str:
        env = app_envelope(account_id, "chat_read", ChatReadData(chat_id=chat_id or "c1"))
        await publish_event(self.js, app_event_subject(account_id, "chat_read"), env)
        return env.id

    async def publish(self, account_id: str, type_: str, data: Any) -> str:
        env = app_envelope(account_id, type_, data)  # type: ignore[arg-type]
        await publish_event(self.js, app_event_subject(account_id, type_), env)  # type: ignore[arg-type]
        return env.id


@pytest.fixture
def app_events(nats_client: NatsClient) -> AppEvents:
    return AppEvents(nats_client)


WebhookMaker = Callable[..., Any]


@pytest.fixture
def make_webhook(client: httpx.AsyncClient) -> WebhookMaker:
    """``await make_webhook(tenant, url, events=["*"], **body)`` → the created webhook."""

    async def make(
        tenant: Tenant, url: str, events: list[str] | None = None, **body: Any
    ) -> dict[str, Any]:
        resp = await client.post(
            "/api/webhooks",
            json={"url": url, "events": events or ["*"], **body},
            headers=tenant.headers,
        )
        assert resp.status_code == 201, resp.text
        webhook: dict[str, Any] = resp.json()
        return webhook

    return make
