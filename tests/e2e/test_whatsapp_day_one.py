"""Issue 11 "Real WhatsApp, day one" through the gateway with the simulator: the
QR nobody scans, contacts addressed by LID, status posts, media that fails."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from clarin_devkit.testing import eventually

from .helpers import Socket, bearer, linked_device, register, sim
from .system import System

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, timeout=15) as c:
        yield c


async def get(client: httpx.AsyncClient, session: dict[str, Any], path: str) -> Any:
    resp = await client.get(path, headers=bearer(session))
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_a_qr_nobody_scans_ends_disconnected_with_the_reason(
    system: System, client: httpx.AsyncClient
) -> None:
    session = await register(client)
    headers = bearer(session)
    async with Socket(system.base_url, session["access_token"]) as ws:
        device = (await client.post("/api/devices", json={"name": "Caja"}, headers=headers)).json()
        assert (
            await client.post(f"/api/devices/{device['id']}/connect", headers=headers)
        ).status_code == 202
        await ws.wait_for(
            lambda f: f["type"] == "qr_code" and f["data"]["device_id"] == device["id"]
        )
        assert await sim(system.nats_url, device["id"], "qr_timeout", {}) == {"ok": True}
        frame = await ws.wait_for(
            lambda f: (
                f["type"] == "device_status" and f["data"]["device"]["status"] == "disconnected"
            )
        )
    ended = frame["data"]["device"]
    assert ended["last_error"] and "QR" in ended["last_error"] and "expired" in ended["last_error"]
    assert (await get(client, session, f"/api/devices/{device['id']}"))["status"] == "disconnected"
    qr = await client.get(f"/api/devices/{device['id']}/qr", headers=headers)
    assert qr.status_code == 404
    # asking again starts a fresh pairing
    await client.post(f"/api/devices/{device['id']}/connect", headers=headers)

    async def a_fresh_qr() -> bool:
        qr = await client.get(f"/api/devices/{device['id']}/qr", headers=headers)
        return qr.status_code == 200

    await eventually(a_fresh_qr, timeout=10)


async def test_lid_contacts_are_one_chat_with_a_lead_that_has_the_phone(
    system: System, client: httpx.AsyncClient
) -> None:
    session = await register(client)
    async with Socket(system.base_url, session["access_token"]) as ws:
        device = await linked_device(client, session, system.nats_url, "5215500001111")

        # told alongside: one chat with both addresses, a lead with the phone
        reply = await sim(
            system.nats_url,
            device["id"],
            "inbound",
            {"from": "5215522223333", "lid": "70001112223334", "push_name": "Rosa", "body": "hola"},
        )
        assert reply == {"ok": True}
        lead = (await ws.wait_for(lambda f: f["type"] == "lead_created"))["data"]["lead"]
        assert lead["phone"] == "5215522223333"
        await ws.wait_for(lambda f: f["type"] == "new_message")
        [chat] = (await get(client, session, "/api/chats"))["items"]
        assert chat["jid"] == "5215522223333@s.whatsapp.net"
        assert chat["lid"] == "70001112223334@lid" and chat["phone"] == "5215522223333"
        assert lead["chat_id"] == chat["id"]

        # known only by LID: a chat for now, no lead (no number to give it)
        await sim(
            system.nats_url,
            device["id"],
            "inbound",
            {
                "from": "5215544445555",
                "lid": "80001112223334",
                "phone_known": False,
                "push_name": "Iker",
                "body": "¿hay stock?",
            },
        )
        first = await ws.wait_for(
            lambda f: (
                f["type"] == "new_message" and f["data"]["chat"]["lid"] == "80001112223334@lid"
            )
        )
        lid_chat = first["data"]["chat"]
        assert lid_chat["jid"] == "80001112223334@lid" and lid_chat["phone"] is None

        # a later message tells the number: the same chat, now with its phone and lead
        await sim(
            system.nats_url,
            device["id"],
            "inbound",
            {
                "from": "5215544445555",
                "lid": "80001112223334",
                "push_name": "Iker",
                "body": "soy Iker",
            },
        )
        second = await ws.wait_for(
            lambda f: f["type"] == "new_message" and f["data"]["message"]["body"] == "soy Iker"
        )
        merged = second["data"]["chat"]
        assert merged["phone"] == "5215544445555" and merged["lid"] == "80001112223334@lid"
        assert merged["unread_count"] == 2
        iker = (
            await ws.wait_for(
                lambda f: (
                    f["type"] == "lead_created" and f["data"]["lead"]["phone"] == "5215544445555"
                )
            )
        )["data"]["lead"]
        assert iker["chat_id"] == merged["id"] and iker["name"] == "Iker"

        # and the LID alone keeps landing in it
        await sim(
            system.nats_url,
            device["id"],
            "inbound",
            {
                "from": "5215544445555",
                "lid": "80001112223334",
                "phone_known": False,
                "body": "gracias",
            },
        )
        await ws.wait_for(
            lambda f: f["type"] == "new_message" and f["data"]["message"]["body"] == "gracias"
        )
    chats = (await get(client, session, "/api/chats"))["items"]
    assert sorted(c["phone"] for c in chats) == ["5215522223333", "5215544445555"]
    iker_chat = next(c for c in chats if c["phone"] == "5215544445555")
    assert iker_chat["id"] == merged["id"] and iker_chat["unread_count"] == 3

    # the chats service links the lead when it hears lead_created: after it, not with it
    async def linked_to_the_lead() -> bool:
        chat = await get(client, session, f"/api/chats/{merged['id']}")
        return bool(chat["lead_id"] == iker["id"])

    await eventually(linked_to_the_lead, timeout=10)
    messages = (await get(client, session, f"/api/chats/{iker_chat['id']}/messages"))["items"]
    assert [m["body"] for m in messages] == ["gracias", "soy Iker", "¿hay stock?"]
    gone = await client.get(f"/api/chats/{lid_chat['id']}", headers=bearer(session))
    assert gone.status_code == 404
    leads = (await get(client, session, "/api/leads"))["items"]
    assert sorted(x["phone"] for x in leads) == ["5215522223333", "5215544445555"]


async def test_a_status_post_makes_no_chat_no_lead_no_unread(
    system: System, client: httpx.AsyncClient
) -> None:
    session = await register(client)
    async with Socket(system.base_url, session["access_token"]) as ws:
        device = await linked_device(client, session, system.nats_url, "5215500002222")
        reply = await sim(
            system.nats_url,
            device["id"],
            "status_post",
            {"from": "5215566667777", "push_name": "Nora", "body": "¡De viaje! ✈️"},
        )
        assert reply == {"ok": True}
        # something after it arrives: the post had every chance to show up first
        await sim(
            system.nats_url, device["id"], "inbound", {"from": "5215588889999", "body": "hola"}
        )
        await ws.wait_for(lambda f: f["type"] == "new_message")
        await ws.wait_for(lambda f: f["type"] == "lead_created")
    chats = (await get(client, session, "/api/chats"))["items"]
    assert [c["phone"] for c in chats] == ["5215588889999"]
    assert chats[0]["unread_count"] == 1
    leads = (await get(client, session, "/api/leads"))["items"]
    assert [x["phone"] for x in leads] == ["5215588889999"]
    assert not [f for f in ws.frames if f["type"] == "new_message" and "De viaje" in str(f)]


async def test_a_failed_media_download_is_kept_and_retried(
    system: System, client: httpx.AsyncClient
) -> None:
    session = await register(client)
    headers = bearer(session)
    async with Socket(system.base_url, session["access_token"]) as ws:
        device = await linked_device(client, session, system.nats_url, "5215500003333")
        reply = await sim(
            system.nats_url,
            device["id"],
            "inbound",
            {
                "from": "5215512121212",
                "body": "el recibo",
                "media": {
                    "mime_type": "image/png",
                    "file_name": "recibo.png",
                    "data_base64": base64.b64encode(PNG).decode(),
                    "fail": 1,
                },
            },
        )
        assert reply == {"ok": True}
        new = await ws.wait_for(lambda f: f["type"] == "new_message")
        message = new["data"]["message"]
        assert message["type"] == "image" and message["body"] == "el recibo"
        assert message["media"]["status"] == "pending"
        failed = await ws.wait_for(
            lambda f: (
                f["type"] == "message_updated"
                and f["data"]["message"]["media"]["status"] == "failed"
            )
        )
        assert failed["data"]["message"]["id"] == message["id"]
        assert failed["data"]["message"]["media"]["error"]
        got = await client.get(f"/api/media/{message['id']}", headers=headers)
        assert got.status_code == 409 and got.json()["error"]["code"] == "media_failed"
        # the message is there all along, counted unread
        chats = (await get(client, session, "/api/chats"))["items"]
        assert chats[0]["unread_count"] == 1 and chats[0]["last_message_preview"] == "el recibo"

        other = await register(client)
        foreign = await client.post(f"/api/media/{message['id']}/retry", headers=bearer(other))
        assert foreign.status_code == 404
        retried = await client.post(f"/api/media/{message['id']}/retry", headers=headers)
        assert retried.status_code == 202, retried.text
        assert retried.json()["media"]["status"] == "pending"
        await ws.wait_for(
            lambda f: (
                f["type"] == "message_updated"
                and f["data"]["message"]["media"]["status"] == "ready"
            )
        )
    got = await client.get(f"/api/media/{message['id']}", headers=headers)
    assert got.status_code == 200 and got.content == PNG
    again = await client.post(f"/api/media/{message['id']}/retry", headers=headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "media_not_retryable"


async def test_media_over_the_size_cap_says_too_large(
    system: System, client: httpx.AsyncClient
) -> None:
    session = await register(client)
    async with Socket(system.base_url, session["access_token"]) as ws:
        device = await linked_device(client, session, system.nats_url, "5215500004444")
        await sim(
            system.nats_url,
            device["id"],
            "inbound",
            {
                "from": "5215534343434",
                "media": {
                    "mime_type": "video/mp4",
                    "file_name": "boda.mp4",
                    "data_base64": base64.b64encode(b"not really a video").decode(),
                    "size": 200 * 1024 * 1024,
                },
            },
        )
        frame = await ws.wait_for(
            lambda f: (
                f["type"] == "message_updated"
                and f["data"]["message"]["media"]["status"] == "too_large"
            )
        )
    media = frame["data"]["message"]["media"]
    assert "64 MiB" in media["error"] and media["size"] == 200 * 1024 * 1024
    got = await client.get(media["url"], headers=bearer(session))
    assert got.status_code == 409 and got.json()["error"]["code"] == "media_too_large"
