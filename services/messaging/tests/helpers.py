"""Typed helpers of the messaging tests, imported as
``services.messaging.tests.helpers``: the service on the real servers, a fake
devices and auth service, a stand-in for the device worker, and event helpers."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import BaseModel

from clarin_common.app import service_context
from clarin_common.auth import TokenVerifier
from clarin_common.events import (
    Envelope,
    MediaRef,
    WaKind,
    WaMessage,
    WaReceipt,
    WaSent,
    wa_envelope,
    wa_event_subject,
)
from clarin_common.nats import encode
from clarin_common.settings import DEV_JWT_PUBLIC_KEY
from clarin_devkit.testing import auth_headers, make_token, running_app
from clarin_messaging.deps import MessagingContext
from clarin_messaging.main import create_app
from clarin_messaging.settings import MessagingSettings

# device id -> account id, as the fake devices service knows them
DEVICES: dict[str, str] = {}
# account id -> its user ids, as the fake auth service knows them
USERS: dict[str, list[str]] = {}


def fake_devices_app() -> FastAPI:
    app = FastAPI()
    verifier = TokenVerifier(DEV_JWT_PUBLIC_KEY)

    @app.get("/api/devices/{device_id}")
    async def get_device(device_id: str, request: Request) -> JSONResponse:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            principal = verifier.verify(token)
        except Exception:
            return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
        if DEVICES.get(device_id) != principal.account_id:
            return JSONResponse({"error": {"code": "not_found"}}, status_code=404)
        return JSONResponse({"id": device_id, "account_id": principal.account_id})

    @app.get("/api/users")
    async def list_users(request: Request) -> JSONResponse:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            principal = verifier.verify(token)
        except Exception:
            return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
        ids = USERS.get(principal.account_id, [])
        return JSONResponse({"items": [{"id": i, "account_id": principal.account_id} for i in ids]})

    return app


@dataclass
class Tenant:
    account_id: str
    device_id: str
    token: str
    user_id: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return auth_headers(self.token)

    def colleague(self, role: str = "agent") -> Tenant:
        """Another user of the same account (known to auth), with their own token."""
        user_id = str(uuid.uuid4())
        USERS.setdefault(self.account_id, []).append(user_id)
        token = make_token(account_id=self.account_id, user_id=user_id, role=role)
        return Tenant(self.account_id, self.device_id, token, user_id)


def new_tenant() -> Tenant:
    account_id, device_id, user_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    DEVICES[device_id] = account_id
    USERS[account_id] = [user_id]
    return Tenant(
        account_id, device_id, make_token(account_id=account_id, user_id=user_id), user_id
    )


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient
    nc: NatsClient
    settings: MessagingSettings

    @property
    def ctx(self) -> MessagingContext:
        return service_context(self.app, MessagingContext)


def settings_for(tmp_path: Path, devices_url: str, **overrides: Any) -> MessagingSettings:
    values: dict[str, Any] = {
        "devices_url": devices_url,
        "auth_url": devices_url,
        "media_dir": str(tmp_path / "media"),
        "command_timeout": 1.0,
        "mark_read_timeout": 1.0,
        "consumer_fetch_timeout": 0.2,
        "consumer_ack_wait": 2.0,
    }
    values.update(overrides)
    return MessagingSettings(**values)


@contextlib.asynccontextmanager
async def service(
    nc: NatsClient, tmp_path: Path, devices_url: str, **overrides: Any
) -> AsyncIterator[Service]:
    settings = settings_for(tmp_path, devices_url, **overrides)
    app = create_app(settings)
    async with running_app(app) as client:
        yield Service(app=app, client=client, nc=nc, settings=settings)


# ---- the device worker's side ------------------------------------------------------


async def publish_wa(
    nc: NatsClient,
    tenant: Tenant,
    kind: WaKind,
    data: BaseModel,
    *,
    event_id: str | None = None,
    device_id: str | None = None,
) -> Envelope[Any]:
    device = device_id or tenant.device_id
    env = wa_envelope(tenant.account_id, device, kind, data, event_id=event_id)
    await nc.jetstream().publish(
        wa_event_subject(tenant.account_id, device, kind),
        encode(env),
        headers={"Nats-Msg-Id": env.id},
    )
    return env


def inbound(
    wa_id: str,
    *,
    phone: str = "5215512345678",
    body: str | None = "hola",
    push_name: str | None = "Ana",
    sent_at: datetime | None = None,
    media: MediaRef | None = None,
    type_: str = "text",
) -> WaMessage:
    return WaMessage(
        wa_message_id=wa_id,
        chat_jid=f"{phone}@s.whatsapp.net",
        sender_jid=f"{phone}@s.whatsapp.net",
        push_name=push_name,
        direction="in",
        type=type_,
        body=body,
        media=media,
        sent_at=sent_at or datetime.now(UTC),
    )


def receipt(wa_ids: list[str], status: str, phone: str = "5215512345678") -> WaReceipt:
    return WaReceipt(
        wa_message_ids=wa_ids,
        chat_jid=f"{phone}@s.whatsapp.net",
        status=status,
        receipt_at=datetime.now(UTC),
    )


def sent_event(
    message_id: str, wa_id: str | None, status: str = "sent", error: str | None = None
) -> WaSent:
    return WaSent(
        message_id=message_id,
        chat_jid="5215512345678@s.whatsapp.net",
        wa_message_id=wa_id,
        status=status,
        error=error,
        sent_at=datetime.now(UTC),
    )


@dataclass
class FakeWorker:
    """Stands in for the worker that holds a device: answers ``wa.cmd.{device_id}``
    and takes the device's queued sends (``wa.out.{device_id}.*``), reporting each
    as the real one does, with a ``sent`` event on WA_EVENTS."""

    nc: NatsClient
    mode: str = "accept"  # accept | refuse | silent
    commands: list[dict[str, Any]] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    counter: int = 0

    async def handle(self, msg: Msg) -> None:
        command = json.loads(msg.data)
        self.commands.append(command)
        if self.mode == "silent":
            return
        if command["type"] in ("send_text", "send_media", "react", "edit", "revoke"):
            if self.mode == "refuse":
                reply: dict[str, Any] = {
                    "ok": False,
                    "error": {"code": "rejected", "message": "recipient not on WhatsApp"},
                }
            else:
                self.counter += 1
                reply = {
                    "ok": True,
                    "result": {
                        "wa_message_id": f"3EB0{self.counter:08d}{command['message_id'][:6]}",
                        "sent_at": datetime.now(UTC).isoformat(),
                    },
                }
        else:
            reply = {"ok": True, "result": {}}
        await msg.respond(json.dumps(reply).encode())

    async def take_send(self, msg: Msg) -> None:
        envelope = json.loads(msg.data)
        command = envelope["data"]
        self.commands.append(command)
        self.subjects.append(msg.subject)
        if self.mode == "silent":
            return
        if self.mode == "refuse":
            event = sent_event(command["message_id"], None, "failed", "recipient not on WhatsApp")
        else:
            self.counter += 1
            wa_id = f"3EB0{self.counter:08d}{command['message_id'][:6]}"
            event = sent_event(command["message_id"], wa_id)
        account_id, device_id = envelope["account_id"], envelope["device_id"]
        env = wa_envelope(account_id, device_id, "sent", event)
        await self.nc.jetstream().publish(
            wa_event_subject(account_id, device_id, "sent"),
            encode(env),
            headers={"Nats-Msg-Id": env.id},
        )


@contextlib.asynccontextmanager
async def fake_worker(
    nc: NatsClient, device_id: str, mode: str = "accept"
) -> AsyncIterator[FakeWorker]:
    worker = FakeWorker(nc=nc, mode=mode)
    subs = [
        await nc.subscribe(f"wa.cmd.{device_id}", cb=worker.handle),
        await nc.subscribe(f"wa.out.{device_id}.*", cb=worker.take_send),
    ]
    await nc.flush()
    try:
        yield worker
    finally:
        for sub in subs:
            await sub.unsubscribe()


@dataclass
class AppEvents:
    items: list[dict[str, Any]] = field(default_factory=list)

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.items if e["type"] == type_]


@contextlib.asynccontextmanager
async def app_events(nc: NatsClient, account_id: str) -> AsyncIterator[AppEvents]:
    events = AppEvents()

    async def cb(msg: Msg) -> None:
        events.items.append(json.loads(msg.data))

    sub = await nc.subscribe(f"app.{account_id}.>", cb=cb)
    await nc.flush()
    try:
        yield events
    finally:
        await sub.unsubscribe()


async def count_rows(svc: Service, sql: str, *args: Any) -> int:
    value = await svc.ctx.pool.fetchval(sql, *args)
    return int(value)


# ---- the API's answers ---------------------------------------------------------------


def locs(resp: httpx.Response) -> list[list[Any]]:
    """The ``loc`` of each detail of a validation error."""
    return [d["loc"] for d in resp.json()["error"]["details"]]


async def chats_of(svc: Service, tenant: Tenant) -> list[dict[str, Any]]:
    resp = await svc.client.get("/api/chats", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


async def messages_of(svc: Service, tenant: Tenant, chat_id: str) -> list[dict[str, Any]]:
    resp = await svc.client.get(
        f"/api/chats/{chat_id}/messages", params={"limit": 200}, headers=tenant.headers
    )
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items
