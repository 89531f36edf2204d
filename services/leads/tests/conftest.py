"""Fixtures of the leads tests: the app on real PostgreSQL/NATS, a stand-in auth
service (our own code playing the other service), tenants and WhatsApp events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from clarin_common.auth import TokenVerifier
from clarin_common.events import WaMessage, wa_envelope, wa_event_subject
from clarin_common.nats import publish_event
from clarin_common.settings import DEV_JWT_PUBLIC_KEY
from clarin_devkit.testing import auth_headers, live_server, make_token, running_app
from clarin_devkit.testing.plugin import TestServers
from clarin_leads.main import create_app
from clarin_leads.settings import LeadsSettings


@dataclass
class FakeAuth:
    """``GET /api/users`` of the auth service: the users of the caller's account."""

    url: str = ""
    users: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    mode: str = "ok"  # "ok" | "error"
    calls: int = 0

    def reset(self) -> None:
        self.users.clear()
        self.mode = "ok"
        self.calls = 0


def _fake_auth_app(state: FakeAuth) -> FastAPI:
    app = FastAPI()
    verifier = TokenVerifier(DEV_JWT_PUBLIC_KEY)

    @app.get("/api/users")
    async def users(request: Request) -> JSONResponse:
        state.calls += 1
        if state.mode == "error":
            return JSONResponse({"error": {"code": "boom"}}, status_code=500)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            principal = verifier.verify(token)
        except Exception:
            return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
        return JSONResponse({"items": state.users.get(principal.account_id, [])})

    return app


@pytest.fixture(scope="session")
async def fake_auth() -> AsyncIterator[FakeAuth]:
    state = FakeAuth()
    async with live_server(_fake_auth_app(state)) as url:
        state.url = url
        yield state


@dataclass
class Tenant:
    account_id: str
    user_id: str
    token: str
    auth: FakeAuth

    @property
    def headers(self) -> dict[str, str]:
        return auth_headers(self.token)

    def add_user(self, name: str = "Agent") -> str:
        """Another user of this account, as auth knows it."""
        user_id = str(uuid.uuid4())
        self.auth.users.setdefault(self.account_id, []).append(
            {
                "id": user_id,
                "account_id": self.account_id,
                "email": f"{user_id[:8]}@example.com",
                "name": name,
                "role": "agent",
            }
        )
        return user_id


@pytest.fixture
def new_tenant(fake_auth: FakeAuth) -> Callable[[], Tenant]:
    def make() -> Tenant:
        account_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
        fake_auth.users[account_id] = [
            {
                "id": user_id,
                "account_id": account_id,
                "email": f"{user_id[:8]}@example.com",
                "name": "Admin",
                "role": "admin",
            }
        ]
        return Tenant(account_id, user_id, make_token(account_id, user_id), fake_auth)

    return make


def leads_settings(fake_auth: FakeAuth, **overrides: Any) -> LeadsSettings:
    return LeadsSettings(auth_url=fake_auth.url, auth_timeout=2.0, **overrides)


@pytest.fixture
async def client(
    clean_state: None, fake_auth: FakeAuth, test_servers: TestServers
) -> AsyncIterator[httpx.AsyncClient]:
    fake_auth.reset()
    async with running_app(create_app(leads_settings(fake_auth))) as http:
        yield http


@pytest.fixture
def settings_for(fake_auth: FakeAuth) -> Callable[..., LeadsSettings]:
    return lambda **overrides: leads_settings(fake_auth, **overrides)


# ---- WhatsApp events ------------------------------------------------------------


class WaPublisher:
    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.js = nc.jetstream()

    async def message(
        self,
        account_id: str,
        *,
        device_id: str | None = None,
        phone: str = "5215512345678",
        chat_jid: str | None = None,
        push_name: str | None = "Ana",
        direction: str = "in",
        is_group: bool = False,
        sent_at: datetime | None = None,
        event_id: str | None = None,
    ) -> str:
        """Publish a ``wa.evt.….message`` event as a device worker does; returns its id."""
        device_id = device_id or DEVICE_ID
        jid = chat_jid or f"{phone}@s.whatsapp.net"
        data = WaMessage(
            wa_message_id=uuid.uuid4().hex[:20].upper(),
            chat_jid=jid,
            sender_jid=jid if not is_group else f"{phone}@s.whatsapp.net",
            push_name=push_name,
            direction=direction,  # type: ignore[arg-type]
            body="hola",
            is_group=is_group,
            sent_at=sent_at or datetime.now(UTC),
        )
        env = wa_envelope(account_id, device_id, "message", data, event_id=event_id)
        await publish_event(self.js, wa_event_subject(account_id, device_id, "message"), env)
        return env.id

    async def drained(self, timeout: float = 10.0) -> None:
        """Wait until the leads consumer has acked everything in the stream."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                info = await self.js.consumer_info("WA_EVENTS", "leads")
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    return
            except Exception:  # not created yet
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("leads consumer did not drain")
            await asyncio.sleep(0.05)


DEVICE_ID = "0b7c6a1e-5d2f-4f1e-9a3b-2c1d0e9f8a7b"


@pytest.fixture
def wa(nats_client: NatsClient) -> WaPublisher:
    return WaPublisher(nats_client)


class AppEvents:
    """Collects ``app.{account}.>`` as the WebSocket hub would see them."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def handler(self, msg: Msg) -> None:
        self.frames.append({"subject": msg.subject, **json.loads(msg.data)})

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == type_]


@pytest.fixture
async def app_events(nats_client: NatsClient) -> AsyncIterator[Callable[..., Any]]:
    subs = []

    async def subscribe(account_id: str) -> AppEvents:
        events = AppEvents()
        subs.append(await nats_client.subscribe(f"app.{account_id}.>", cb=events.handler))
        await nats_client.flush()
        return events

    yield subscribe
    for sub in subs:
        await sub.unsubscribe()
