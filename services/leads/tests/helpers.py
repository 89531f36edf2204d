"""Typed helpers of the leads tests: a stand-in auth service (our own code playing
the other service), tenants, WhatsApp events as a device worker publishes them,
and the application events the WebSocket hub would see."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from clarin_common.auth import TokenVerifier
from clarin_common.events import (
    WA_EVENTS_STREAM,
    Envelope,
    WaMessage,
    wa_envelope,
    wa_event_subject,
)
from clarin_common.nats import confirm_subscriptions, publish_event
from clarin_common.settings import DEV_JWT_PUBLIC_KEY
from clarin_devkit.testing import auth_headers, eventually, make_token
from clarin_leads.consumers import DURABLE
from clarin_leads.settings import LeadsSettings

DEVICE_ID = "0b7c6a1e-5d2f-4f1e-9a3b-2c1d0e9f8a7b"
PHONE = "5215512345678"


@dataclass
class FakeAuth:
    """``GET /api/users`` of the auth service: the users of the caller's account."""

    url: str = ""
    users: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    mode: Literal["ok", "error"] = "ok"
    calls: int = 0

    def reset(self) -> None:
        self.users.clear()
        self.mode = "ok"
        self.calls = 0

    def app(self) -> FastAPI:
        app = FastAPI()
        verifier = TokenVerifier(DEV_JWT_PUBLIC_KEY)

        @app.get("/api/users")
        async def users(request: Request) -> JSONResponse:
            self.calls += 1
            if self.mode == "error":
                return JSONResponse({"error": {"code": "boom"}}, status_code=500)
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            try:
                principal = verifier.verify(token)
            except Exception:
                return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
            return JSONResponse({"items": self.users.get(principal.account_id, [])})

        return app

    def add_user(self, account_id: str, role: str = "agent", name: str = "Agent") -> str:
        """A user of ``account_id``, as auth knows it; their id."""
        user_id = str(uuid.uuid4())
        self.users.setdefault(account_id, []).append(
            {
                "id": user_id,
                "account_id": account_id,
                "email": f"{user_id[:8]}@example.com",
                "name": name,
                "role": role,
            }
        )
        return user_id

    def new_tenant(self) -> Tenant:
        """A fresh account with its admin (known to this auth) and their token."""
        account_id = str(uuid.uuid4())
        user_id = self.add_user(account_id, role="admin", name="Admin")
        return Tenant(account_id, user_id, make_token(account_id, user_id), self)


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
        return self.auth.add_user(self.account_id, name=name)


def leads_settings(fake_auth: FakeAuth, **overrides: Any) -> LeadsSettings:
    return LeadsSettings(auth_url=fake_auth.url, auth_timeout=2.0, **overrides)


async def leads_of(
    client: httpx.AsyncClient, tenant: Tenant, query: str = ""
) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/leads{query}", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


class WaPublisher:
    """Publishes ``wa.evt.….message`` events as a device worker does."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.js = nc.jetstream()

    async def message(
        self,
        account_id: str,
        *,
        device_id: str | None = None,
        phone: str = PHONE,
        chat_jid: str | None = None,
        chat_lid: str | None = None,
        sender_jid: str | None = None,
        push_name: str | None = "Ana",
        direction: Literal["in", "out"] = "in",
        is_group: bool = False,
        sent_at: datetime | None = None,
        event_id: str | None = None,
    ) -> str:
        """Publish one message event; returns its id."""
        device_id = device_id or DEVICE_ID
        jid = chat_jid or f"{phone}@s.whatsapp.net"
        data = WaMessage(
            wa_message_id=uuid.uuid4().hex[:20].upper(),
            chat_jid=jid,
            chat_lid=chat_lid,
            sender_jid=sender_jid or (jid if not is_group else f"{phone}@s.whatsapp.net"),
            sender_lid=chat_lid,
            push_name=push_name,
            direction=direction,
            body="hola",
            is_group=is_group,
            sent_at=sent_at or datetime.now(UTC),
        )
        env = wa_envelope(account_id, device_id, "message", data, event_id=event_id)
        await self.publish(wa_event_subject(account_id, device_id, "message"), env)
        return env.id

    async def publish(self, subject: str, envelope: Envelope[Any]) -> None:
        await publish_event(self.js, subject, envelope)

    async def drained(self, timeout: float = 10.0) -> None:
        """Wait until the leads consumer has acked everything in the stream."""

        async def done() -> bool:
            try:
                info = await self.js.consumer_info(WA_EVENTS_STREAM, DURABLE)
            except Exception:  # not created yet
                return False
            return bool(info.num_pending == 0 and info.num_ack_pending == 0)

        await eventually(done, timeout=timeout)


class AppEvents:
    """Collects ``app.{account}.>`` as the WebSocket hub would see them."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def handler(self, msg: Msg) -> None:
        self.frames.append({"subject": msg.subject, **json.loads(msg.data)})

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == type_]


class AppEventsFeed:
    """Subscribes :class:`AppEvents` collectors; :meth:`close` drops them."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self._subs: list[Subscription] = []

    async def __call__(self, account_id: str) -> AppEvents:
        events = AppEvents()
        self._subs.append(await self.nc.subscribe(f"app.{account_id}.>", cb=events.handler))
        await confirm_subscriptions(self.nc)
        return events

    async def close(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
