"""Typed helpers of the campaigns tests: stand-ins for the leads and devices
services (our own code playing them), for messaging's ``svc.messaging.send``,
and the application events a campaign publishes."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clarin_campaigns.settings import CampaignsSettings
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from clarin_common.auth import TokenVerifier
from clarin_common.events import (
    MESSAGING_SEND_SUBJECT,
    MessageStatusData,
    app_envelope,
    app_event_subject,
)
from clarin_common.nats import encode
from clarin_common.settings import DEV_JWT_PUBLIC_KEY
from clarin_devkit.testing import auth_headers, make_token


@dataclass
class Tenant:
    account_id: str
    device_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return auth_headers(self.token)

    def agent(self) -> dict[str, str]:
        return auth_headers(make_token(account_id=self.account_id, role="agent"))


@dataclass
class FakeUpstreams:
    """``/api/leads`` (list with stage/tag, one by id) and ``/api/devices/{id}``."""

    url: str = ""
    leads: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)

    def app(self) -> FastAPI:
        app = FastAPI()
        verifier = TokenVerifier(DEV_JWT_PUBLIC_KEY)

        def account(request: Request) -> str | None:
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            try:
                return verifier.verify(token).account_id
            except Exception:
                return None

        @app.get("/api/leads")
        async def list_leads(
            request: Request,
            stage: str | None = None,
            tag: str | None = None,
            limit: int = 50,
            cursor: str | None = None,
        ) -> JSONResponse:
            acct = account(request)
            if acct is None:
                return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
            rows = [
                lead
                for lead in self.leads.get(acct, [])
                if (stage is None or lead["stage"] == stage)
                and (tag is None or tag in lead["tags"])
            ]
            start = int(cursor or 0)
            page = rows[start : start + limit]
            more = start + limit < len(rows)
            return JSONResponse(
                {"items": page, "next_cursor": str(start + limit) if more else None}
            )

        @app.get("/api/leads/{lead_id}")
        async def get_lead(lead_id: str, request: Request) -> JSONResponse:
            acct = account(request)
            if acct is None:
                return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
            for lead in self.leads.get(acct, []):
                if lead["id"] == lead_id:
                    return JSONResponse(lead)
            return JSONResponse({"error": {"code": "lead_not_found"}}, status_code=404)

        @app.get("/api/devices/{device_id}")
        async def get_device(device_id: str, request: Request) -> JSONResponse:
            acct = account(request)
            if acct is None:
                return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
            if self.devices.get(device_id) != acct:
                return JSONResponse({"error": {"code": "device_not_found"}}, status_code=404)
            return JSONResponse({"id": device_id, "account_id": acct})

        return app

    def new_tenant(self) -> Tenant:
        account_id = str(uuid.uuid4())
        device_id = str(uuid.uuid4())
        self.devices[device_id] = account_id
        return Tenant(account_id, device_id, make_token(account_id=account_id))

    def add_lead(
        self,
        tenant: Tenant,
        name: str,
        phone: str | None,
        *,
        stage: str = "new",
        tags: list[str] | None = None,
    ) -> str:
        now = datetime.now(UTC).isoformat()
        lead_id = str(uuid.uuid4())
        self.leads.setdefault(tenant.account_id, []).append(
            {
                "id": lead_id,
                "account_id": tenant.account_id,
                "name": name,
                "phone": phone,
                "stage": stage,
                "tags": tags or [],
                "source": "manual",
                "created_at": now,
                "updated_at": now,
            }
        )
        return lead_id


@dataclass
class FakeMessaging:
    """Answers ``svc.messaging.send`` as messaging does (idempotent by client_id)."""

    nc: NatsClient
    requests: list[dict[str, Any]] = field(default_factory=list)
    by_client: dict[str, str] = field(default_factory=dict)
    answering: bool = True
    _sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(MESSAGING_SEND_SUBJECT, cb=self._handle)
        await self.nc.flush()

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        if not self.answering:
            return
        request = json.loads(msg.data)
        self.requests.append(request)
        message_id = self.by_client.setdefault(request["client_id"], request["message_id"])
        reply = {"ok": True, "result": {"message_id": message_id, "status": "pending"}}
        await msg.respond(json.dumps(reply).encode())

    def bodies(self) -> list[str]:
        """Each message as created once (a repeat of a client_id is not a new one)."""
        first: dict[str, str] = {}
        for request in self.requests:
            first.setdefault(request["client_id"], request["body"])
        return list(first.values())

    async def status(self, account_id: str, message_id: str, status: str) -> None:
        """A receipt as messaging announces it (``message_status``)."""
        env = app_envelope(
            account_id,
            "message_status",
            MessageStatusData(message_id=message_id, chat_id=str(uuid.uuid4()), status=status),
        )
        await self.nc.jetstream().publish(
            app_event_subject(account_id, "message_status"),
            encode(env),
            headers={"Nats-Msg-Id": env.id},
        )


@dataclass
class Progress:
    """The ``campaign_progress`` events seen on NATS."""

    frames: list[dict[str, Any]] = field(default_factory=list)

    def of(self, campaign_id: str) -> list[dict[str, Any]]:
        return [
            f["data"]["campaign"] for f in self.frames if f["data"]["campaign"]["id"] == campaign_id
        ]


def campaigns_settings(upstreams: FakeUpstreams, **overrides: Any) -> CampaignsSettings:
    values: dict[str, Any] = {
        "leads_url": upstreams.url,
        "devices_url": upstreams.url,
        "jitter": 0.0,
        "tick_seconds": 0.05,
        "send_timeout_seconds": 1.0,
    }
    values.update(overrides)
    return CampaignsSettings(**values)
