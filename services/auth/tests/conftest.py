from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NatsClient

from clarin_auth.main import create_app
from clarin_auth.settings import AuthSettings
from clarin_devkit.testing import running_app
from clarin_devkit.testing.plugin import TestServers
from services.auth.tests.helpers import AuthApi, Revoked


@pytest.fixture(scope="session")
async def auth_app_client(test_servers: TestServers) -> AsyncIterator[httpx.AsyncClient]:
    # cost 4 keeps the suite fast; production uses AUTH_BCRYPT_ROUNDS (default 12)
    app = create_app(AuthSettings(bcrypt_rounds=4))
    async with running_app(app) as client:
        yield client


@pytest.fixture
async def client(auth_app_client: httpx.AsyncClient, clean_state: None) -> httpx.AsyncClient:
    return auth_app_client


@pytest.fixture
async def db(test_servers: TestServers) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(test_servers.database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def api(client: httpx.AsyncClient) -> AuthApi:
    return AuthApi(client)


@pytest.fixture
async def revoked(nats_client: NatsClient, clean_state: None) -> AsyncIterator[Revoked]:
    collector = Revoked(nats_client)
    await collector.start()
    yield collector
    await collector.stop()
