"""Typed helpers of the auth tests: the calls most tests make, and the session
revocations auth announces on NATS."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from clarin_common.auth_events import SESSION_REVOKED_SUBJECTS
from clarin_common.nats import confirm_subscriptions

PASSWORD = "correct horse battery"


class AuthApi:
    """The HTTP client with the calls most tests need."""

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
        """The error code of an answer that must have ``status``."""
        assert resp.status_code == status, resp.text
        code: str = resp.json()["error"]["code"]
        return code

    @staticmethod
    def error_locs(resp: httpx.Response) -> list[list[Any]]:
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert body["error"]["code"] == "validation_error"
        return [d["loc"] for d in body["error"]["details"]]


class Revoked:
    """Collects the session revocations auth announces on NATS."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.events: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(SESSION_REVOKED_SUBJECTS, cb=self._on_msg)
        await confirm_subscriptions(self.nc)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        self.events.append(json.loads(msg.data))
        self._new.set()

    async def wait_for(self, user_id: str, reason: str) -> dict[str, Any]:
        """The ``data`` of the first revocation of ``user_id`` for ``reason``."""
        async with asyncio.timeout(10):
            while True:
                for event in self.events:
                    data: dict[str, Any] = event["data"]
                    if data["user_id"] == user_id and data["reason"] == reason:
                        return data
                self._new.clear()
                await self._new.wait()
