"""Fixtures of the webhooks tests: the app on real PostgreSQL/NATS with short retry
timings, a local receiver and a publisher of application events; the helpers
themselves are in :mod:`helpers`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NatsClient

from clarin_devkit.testing import running_app
from clarin_devkit.testing.plugin import TestServers
from clarin_webhooks.main import create_app
from services.webhooks.tests import helpers
from services.webhooks.tests.helpers import AppEvents, SettingsMaker, Tenant, WebhookMaker
from tests.webhook_receiver import Receiver, serving


@pytest.fixture(name="fast_settings")
def fast_settings_fixture() -> SettingsMaker:
    """Settings with retries in fractions of a second; keyword arguments override."""
    return helpers.fast_settings


@pytest.fixture
def new_tenant() -> Callable[[], Tenant]:
    return helpers.new_tenant


@pytest.fixture
async def client(clean_state: None, test_servers: TestServers) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(helpers.fast_settings())) as http:
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


@pytest.fixture
def app_events(nats_client: NatsClient) -> AppEvents:
    return AppEvents(nats_client)


@pytest.fixture
def make_webhook(client: httpx.AsyncClient) -> WebhookMaker:
    """``await make_webhook(tenant, url, events=["*"])`` → the created webhook."""
    return WebhookMaker(client)
