"""The "Done when" lines of the issues, through the gateway of the running system."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from clarin_common.events import ChatReadData, app_envelope, app_event_subject
from clarin_common.nats import connect, publish_event

from .helpers import Socket, bearer, linked_device, register, sim
from .system import System

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, timeout=15) as c:
        yield c


async def test_auth_flow_through_gateway(client: httpx.AsyncClient) -> None:
    session = await register(client)
    me = await client.get("/api/auth/me", headers=bearer(session))
    assert me.status_code == 200 and me.json()["user"]["role"] == "admin"
    assert me.json()["account"]["name"] == "Tienda Ñandú 🛍️"
    login = await client.post(
        "/api/auth/login",
        json={"email": session["email"].upper(), "password": "correct horse battery"},
    )
    assert login.status_code == 200
    refreshed = await client.post(
        "/api/auth/refresh", json={"refresh_token": session["refresh_token"]}
    )
    assert refreshed.status_code == 200
    reused = await client.post(
        "/api/auth/refresh", json={"refresh_token": session["refresh_token"]}
    )
    assert reused.status_code == 401 and reused.json()["error"]["code"]
    out = await client.post(
        "/api/auth/logout", json={"refresh_token": login.json()["refresh_token"]}
    )
    assert out.status_code == 204
    anon = await client.get("/api/auth/me")
    assert anon.status_code == 401 and anon.headers.get("x-request-id")


async def test_forty_wrong_logins_get_429(client: httpx.AsyncClient) -> None:
    session = await register(client)
    statuses = []
    for _ in range(40):
        resp = await client.post(
            "/api/auth/login", json={"email": session["email"], "password": "wrong password!"}
        )
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            assert int(resp.headers["retry-after"]) > 0
            assert resp.json()["error"]["code"] == "rate_limited"
            break
    assert 429 in statuses, statuses
    assert set(statuses[:-1]) == {401}


async def test_websocket_isolation_and_latency(system: System, client: httpx.AsyncClient) -> None:
    a, b = await register(client), await register(client)
    nc = await connect(system.nats_url, name="e2e")
    try:
        async with (
            Socket(system.base_url, a["access_token"]) as ws_a,
            Socket(system.base_url, b["access_token"]) as ws_b,
        ):
            await asyncio.sleep(0.3)  # let the hub subscribe
            ws_a.frames.clear()
            latencies = []
            for i in range(5):
                env = app_envelope(a["account"]["id"], "chat_read", ChatReadData(chat_id=f"c{i}"))
                started = time.perf_counter()
                await publish_event(
                    nc.jetstream(), app_event_subject(a["account"]["id"], "chat_read"), env
                )
                await ws_a.wait_for(lambda f, i=i: f["data"].get("chat_id") == f"c{i}", timeout=2)
                latencies.append(time.perf_counter() - started)
            assert max(latencies) < 0.1, latencies
            await asyncio.sleep(0.3)
            assert not [f for f in ws_b.frames if f.get("type") == "chat_read"]
    finally:
        await nc.close()


async def test_inbox_reply_media_and_lead(system: System, client: httpx.AsyncClient) -> None:
    session = await register(client)
    headers = bearer(session)
    async with Socket(system.base_url, session["access_token"]) as ws:
        device = await linked_device(client, session, system.nats_url, "5215512345678")
        await ws.wait_for(
            lambda f: f["type"] == "device_status" and f["data"]["device"]["status"] == "connected"
        )

        # an inbound message from a new number
        sent_at = time.perf_counter()
        reply = await sim(
            system.nats_url,
            device["id"],
            "inbound",
            {"from": "5215598765432", "push_name": "José Ñúñez", "body": "Hola, ¿precio? 😀"},
        )
        assert reply["ok"], reply
        frame = await ws.wait_for(lambda f: f["type"] == "new_message", timeout=5)
        assert time.perf_counter() - sent_at < 1.0
        assert frame["data"]["message"]["body"] == "Hola, ¿precio? 😀"
        chats = (await client.get("/api/chats", headers=headers)).json()["items"]
        assert len(chats) == 1 and chats[0]["unread_count"] == 1
        chat = chats[0]

        # a lead is born from it
        lead_frame = await ws.wait_for(lambda f: f["type"] == "lead_created", timeout=5)
        lead = lead_frame["data"]["lead"]
        assert lead["source"] == "whatsapp" and lead["phone"] == "5215598765432"
        assert lead["name"] == "José Ñúñez" and lead["stage"] == "new"
        leads = (await client.get("/api/leads", headers=headers)).json()["items"]
        assert [x["id"] for x in leads] == [lead["id"]]
        moved = await client.put(
            f"/api/leads/{lead['id']}", json={"stage": "qualified"}, headers=headers
        )
        assert moved.status_code == 200 and moved.json()["stage"] == "qualified"
        await ws.wait_for(
            lambda f: f["type"] == "lead_updated" and f["data"]["lead"]["stage"] == "qualified"
        )
        qualified = (await client.get("/api/leads?stage=qualified", headers=headers)).json()[
            "items"
        ]
        assert [x["id"] for x in qualified] == [lead["id"]]

        # reply: pending → sent → delivered → read
        client_id = str(uuid.uuid4())
        resp = await client.post(
            "/api/messages/send",
            json={"chat_id": chat["id"], "body": "¡Claro! 100 MXN", "client_id": client_id},
            headers=headers,
        )
        assert resp.status_code == 202, resp.text
        message = resp.json()
        assert message["status"] in ("pending", "sent")
        await ws.wait_for(
            lambda f: f["type"] == "message_sent" and f["data"]["message"]["id"] == message["id"]
        )
        for status in ("delivered", "read"):
            await ws.wait_for(
                lambda f, s=status: (
                    f["type"] == "message_status"
                    and f["data"]["message_id"] == message["id"]
                    and f["data"]["status"] == s
                ),
                timeout=15,
            )
        again = await client.post(
            "/api/messages/send",
            json={"chat_id": chat["id"], "body": "¡Claro! 100 MXN", "client_id": client_id},
            headers=headers,
        )
        assert again.json()["id"] == message["id"]

        # a PNG as media downloads byte for byte
        resp = await client.post(
            "/api/messages/send/media",
            data={"chat_id": chat["id"], "caption": "catálogo"},
            files={"file": ("catalogo.png", PNG, "image/png")},
            headers=headers,
        )
        assert resp.status_code == 202, resp.text
        media_message = resp.json()
        assert media_message["type"] == "image"
        download = await client.get(f"/api/media/{media_message['id']}", headers=headers)
        assert download.status_code == 200
        assert download.content == PNG
        assert download.headers["content-type"].startswith("image/png")

        # mark read
        resp = await client.post(f"/api/chats/{chat['id']}/read", headers=headers)
        assert resp.status_code == 204
        await ws.wait_for(lambda f: f["type"] == "chat_read")
        assert (await client.get(f"/api/chats/{chat['id']}", headers=headers)).json()[
            "unread_count"
        ] == 0

        # another account sees none of it
        other = await register(client)
        assert (
            await client.get(f"/api/chats/{chat['id']}", headers=bearer(other))
        ).status_code == 404
        assert (
            await client.get(f"/api/leads/{lead['id']}", headers=bearer(other))
        ).status_code == 404
        assert (
            await client.get(f"/api/devices/{device['id']}", headers=bearer(other))
        ).status_code == 404


async def test_gateway_readyz_reports_each_service(client: httpx.AsyncClient) -> None:
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["services"] == {
        "auth": "ok",
        "devices": "ok",
        "leads": "ok",
        "messaging": "ok",
        "webhooks": "ok",
        "campaigns": "ok",
    }
