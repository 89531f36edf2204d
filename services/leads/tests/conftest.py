"""Fixtures of the leads tests: the app on real PostgreSQL/NATS and a stand-in auth
service; the helpers themselves are in :mod:`helpers`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NatsClient

from clarin_devkit.testing import live_server, running_app
from clarin_devkit.testing.plugin import TestServers
from clarin_leads.main import create_app
from clarin_leads.settings import LeadsSettings
from services.leads.tests.helpers import (
    AppEventsFeed,
    FakeAuth,
    Tenant,
    WaPublisher,
    leads_settings,
)


@pytest.fixture(scope="session")
async def fake_auth() -> AsyncIterator[FakeAuth]:
    state = FakeAuth()
    async with live_server(state.app()) as url:
        state.url = url
        yield state


@pytest.fixture
def new_tenant(fake_auth: FakeAuth) -> Callable[[], Tenant]:
    return fake_auth.new_tenant


@pytest.fixture
async def client(
    clean_state: None, fake_auth: FakeAuth, test_servers: TestServers
) -> AsyncIterator[httpx.AsyncClient]:
    fake_auth.reset()
    async with running_app(create_app(leads_settings(fake_auth))) as http:
        yield http


@pytest.fixture
def settings_for(fake_auth: FakeAuth) -> Callable[..., LeadsSettings]:
    def settings(**overrides: Any) -> LeadsSettings:
        return leads_settings(fake_auth, **overrides)

    return settings


@pytest.fixture
def wa(nats_client: NatsClient) -> WaPublisher:
    return WaPublisher(nats_client)


@pytest.fixture
async def app_events(nats_client: NatsClient) -> AsyncIterator[AppEventsFeed]:
    feed = AppEventsFeed(nats_client)
    yield feed
    await feed.close()
