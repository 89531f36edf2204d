from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from clarin_auth.main import create_app
from clarin_auth.settings import AuthSettings
from clarin_devkit.testing import running_app
from clarin_devkit.testing.plugin import TestServers

PASSWORD = "correct horse battery"


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


class AuthApi:
    """The HTTP client with the calls most tests need (conftest is not importable)."""

    password = PASSWORD

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def register(
        self,
        email: str = "alice@example.com",
        *,
        account_name: str = "Acme",
        name: str = "Alice",
        password: str = PASSWORD,
    ) -> dict[str, Any]:
        resp = await self.client.post(
            "/api/auth/register",
            json={"account_name": account_name, "name": name, "email": email, "password": password},
        )
        assert resp.status_code == 201, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def login(
        self, email: str = "alice@example.com", password: str = PASSWORD
    ) -> dict[str, Any]:
        resp = await self.client.post(
            "/api/auth/login", json={"email": email, "password": password}
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def refresh(self, refresh_token: str) -> httpx.Response:
        return await self.client.post("/api/auth/refresh", json={"refresh_token": refresh_token})

    async def create_user(
        self,
        admin: dict[str, Any],
        email: str,
        *,
        role: str = "agent",
        name: str = "Bob",
        password: str = PASSWORD,
    ) -> httpx.Response:
        return await self.client.post(
            "/api/users",
            json={"name": name, "email": email, "password": password, "role": role},
            headers=self.bearer(admin),
        )

    @staticmethod
    def bearer(session: dict[str, Any] | str) -> dict[str, str]:
        token = session if isinstance(session, str) else session["access_token"]
        return {"Authorization": f"Bearer {token}"}

    @staticmethod
    def error_code(resp: httpx.Response, status: int) -> str:
        assert resp.status_code == status, resp.text
        code: str = resp.json()["error"]["code"]
        return code

    @staticmethod
    def error_locs(resp: httpx.Response) -> list[list[Any]]:
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert body["error"]["code"] == "validation_error"
        return [d["loc"] for d in body["error"]["details"]]


@pytest.fixture
def api(client: httpx.AsyncClient) -> AuthApi:
    return AuthApi(client)
