"""Issue 12 "The whole WhatsApp conversation" through the gateway with the
simulator: replies, reactions, edits and deletes from the contact and from the
API, typing both ways, and the history a newly linked number hands over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from .helpers import Socket, bearer, linked_device, register, sim
from .system import System

CONTACT = "5215566667777"


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, timeout=15) as c:
        yield c


async def get(client: httpx.AsyncClient, session: dict[str, Any], path: str) -> Any:
    resp = await client.get(path, headers=bearer(session))
    assert resp.status_code == 200, resp.text
    return resp.json()


def updated(frame: dict[str, Any], message_id: str, check: Any) -> bool:
    return bool(
        frame["type"] == "message_updated"
        and frame["data"]["message"]["id"] == message_id
        and check(frame["data"]["message"])
    )


async def test_the_contact_replies_reacts_edits_deletes_and_types(
    system: System, client: httpx.AsyncClient
) -> None:
    session = await register(client)
    async with Socket(system.base_url, session["access_token"]) as ws:
        device = await linked_device(client, session, system.nats_url, "5215500002222")
        nats, device_id = system.nats_url, device["id"]
        await sim(nats, device_id, "inbound",
                  {"from": CONTACT, "push_name": "Lía", "body": "¿Tienen talla M?",
                   "wa_message_id": "C-1"})  # fmt: skip
        first = (await ws.wait_for(lambda f: f["type"] == "new_message"))["data"]["message"]

        # a quoted reply links to the message it quotes
        await sim(nats, device_id, "inbound",
                  {"from": CONTACT, "body": "en azul", "reply_to": "C-1"})  # fmt: skip
        reply = (
            await ws.wait_for(
                lambda f: f["type"] == "new_message" and f["data"]["message"]["body"] == "en azul"
            )
        )["data"]["message"]
        assert reply["reply_to"] == first["id"]
        assert reply["quoted"]["body"] == "¿Tienen talla M?"

        await sim(
            nats, device_id, "react", {"from": CONTACT, "wa_message_id": "C-1", "emoji": "👍"}
        )
        frame = await ws.wait_for(lambda f: updated(f, first["id"], lambda m: m["reactions"]))
        assert frame["data"]["message"]["reactions"] == [
            {"emoji": "👍", "sender_jid": f"{CONTACT}@s.whatsapp.net", "from_me": False}
        ]

        await sim(nats, device_id, "edit", {"wa_message_id": "C-1", "body": "¿Tienen talla L?"})
        frame = await ws.wait_for(lambda f: updated(f, first["id"], lambda m: m["edited_at"]))
        assert frame["data"]["message"]["body"] == "¿Tienen talla L?"

        await sim(nats, device_id, "revoke", {"wa_message_id": "C-1"})
        frame = await ws.wait_for(lambda f: updated(f, first["id"], lambda m: m["deleted"]))
        assert frame["data"]["message"]["body"] is None

        await sim(nats, device_id, "typing", {"from": CONTACT, "state": "composing"})
        typing = await ws.wait_for(lambda f: f["type"] == "presence")
        assert typing["data"] == {"chat_id": first["chat_id"], "state": "composing"}

    # the store says the same; the reaction was never a message nor an unread
    page = (await get(client, session, f"/api/chats/{first['chat_id']}/messages"))["items"]
    assert [m["id"] for m in page] == [reply["id"], first["id"]]
    assert page[1]["deleted"] is True and page[1]["reactions"] == []
    assert page[0]["quoted"]["deleted"] is True
    chat = await get(client, session, f"/api/chats/{first['chat_id']}")
    assert chat["unread_count"] == 2


async def test_our_reply_reaction_edit_delete_and_typing_reach_the_phone(
    system: System, client: httpx.AsyncClient
) -> None:
    session = await register(client)
    headers = bearer(session)
    async with Socket(system.base_url, session["access_token"]) as ws:
        device = await linked_device(client, session, system.nats_url, "5215500003333")
        nats, device_id = system.nats_url, device["id"]
        await sim(
            nats, device_id, "inbound", {"from": CONTACT, "body": "Hola", "wa_message_id": "C-9"}
        )
        incoming = (await ws.wait_for(lambda f: f["type"] == "new_message"))["data"]["message"]
        chat_id = incoming["chat_id"]

        resp = await client.post(
            "/api/messages/send",
            json={"chat_id": chat_id, "body": "¡Hola! ¿Qué buscas?", "reply_to": incoming["id"]},
            headers=headers,
        )
        assert resp.status_code == 202, resp.text
        ours = resp.json()
        assert ours["reply_to"] == incoming["id"]
        await ws.wait_for(
            lambda f: f["type"] == "message_sent" and f["data"]["message"]["id"] == ours["id"]
        )

        resp = await client.post(
            f"/api/messages/{incoming['id']}/react", json={"emoji": "❤️"}, headers=headers
        )
        assert resp.status_code == 202, resp.text
        await ws.wait_for(lambda f: updated(f, incoming["id"], lambda m: m["reactions"]))

        resp = await client.patch(
            f"/api/messages/{ours['id']}", json={"body": "¡Hola! ¿En qué te ayudo?"},
            headers=headers,
        )  # fmt: skip
        assert resp.status_code == 200, resp.text
        await ws.wait_for(lambda f: updated(f, ours["id"], lambda m: m["edited_at"]))

        resp = await client.post(
            f"/api/chats/{chat_id}/typing", json={"state": "composing"}, headers=headers
        )
        assert resp.status_code == 204, resp.text

        resp = await client.post(f"/api/messages/{ours['id']}/revoke", headers=headers)
        assert resp.status_code == 202, resp.text
        await ws.wait_for(lambda f: updated(f, ours["id"], lambda m: m["deleted"]))

        # the phone saw each, in order
        seen = (await sim(nats, device_id, "phone", {}))["seen"]
        assert [s["kind"] for s in seen] == ["reply", "reaction", "edit", "typing", "revoke"]
        assert seen[0]["reply_to"] == "C-9" and seen[1]["emoji"] == "❤️"
        assert seen[2]["body"] == "¡Hola! ¿En qué te ayudo?" and seen[3]["state"] == "composing"
        assert seen[4]["wa_message_id"] == seen[2]["wa_message_id"]

        # bad input
        resp = await client.post(
            f"/api/messages/{ours['id']}/react", json={"emoji": "👍"}, headers=headers
        )
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "message_deleted"
        resp = await client.patch(
            f"/api/messages/{incoming['id']}", json={"body": "x"}, headers=headers
        )
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "message_not_editable"
        stranger = await register(client, "Otra Cuenta")
        resp = await client.post(
            f"/api/messages/{incoming['id']}/react", json={"emoji": "👍"}, headers=bearer(stranger)
        )
        assert resp.status_code == 404

    page = (await get(client, session, f"/api/chats/{chat_id}/messages"))["items"]
    by_id = {m["id"]: m for m in page}
    assert by_id[ours["id"]]["deleted"] is True and by_id[ours["id"]]["body"] is None
    # our reaction is stored when the phone confirmed it; the worker's echo adds nothing
    assert by_id[incoming["id"]]["reactions"] == [
        {"emoji": "❤️", "sender_jid": None, "from_me": True}
    ]


async def test_history_of_5_chats_by_200_lands_whole_once_without_leads(
    system: System, client: httpx.AsyncClient
) -> None:
    session = await register(client)
    start = datetime.now(UTC) - timedelta(days=5)
    chats = [
        {
            "from": f"52155700000{c:02d}",
            "push_name": f"Cliente {c}",
            "messages": [
                {
                    "body": f"mensaje {i} de {c}",
                    "from_me": i % 4 == 0,
                    "at": (start + timedelta(minutes=i)).isoformat(),
                    "wa_message_id": f"HIST-{c}-{i}",
                }
                for i in range(200)
            ],
        }
        for c in range(5)
    ]
    async with Socket(system.base_url, session["access_token"]) as ws:
        device = await linked_device(client, session, system.nats_url, "5215500004444")
        reply = await sim(
            system.nats_url, device["id"], "history", {"chats": chats, "sync_id": "e2e"}
        )
        assert reply == {"ok": True}
        synced = await ws.wait_for(lambda f: f["type"] == "history_synced", timeout=30)
        assert synced["data"] == {"device_id": device["id"], "chats": 5, "messages": 1000}
        # the same sync handed over again (WhatsApp repeats itself) adds nothing
        again = await sim(
            system.nats_url, device["id"], "history", {"chats": chats, "sync_id": "e2e2"}
        )
        assert again == {"ok": True}
        second = await ws.wait_for(
            lambda f: f["type"] == "history_synced" and f is not synced, timeout=30
        )
        assert second["data"]["messages"] == 0 and second["data"]["chats"] == 0
        # a live message afterwards is the only new_message and the only lead
        await sim(system.nats_url, device["id"], "inbound", {"from": CONTACT, "body": "hola"})
        await ws.wait_for(lambda f: f["type"] == "lead_created")
        await ws.wait_for(lambda f: f["type"] == "new_message")
        types = [f["type"] for f in ws.frames]
        assert types.count("new_message") == 1 and types.count("lead_created") == 1
        assert types.count("history_importing") == 2

    listed = (await get(client, session, "/api/chats?limit=200"))["items"]
    imported = [c for c in listed if c["phone"] != CONTACT]
    assert len(imported) == 5 and all(c["unread_count"] == 0 for c in imported)
    assert all(c["lead_id"] is None for c in imported)
    total = 0
    for chat in imported:
        cursor = None
        while True:
            path = f"/api/chats/{chat['id']}/messages?limit=200" + (
                f"&cursor={cursor}" if cursor else ""
            )
            page = await get(client, session, path)
            total += len(page["items"])
            assert all(m["status"] in ("read", "sent") for m in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert chat["last_message_at"].startswith((start + timedelta(minutes=199)).isoformat()[:16])
    assert total == 1000
    leads = (await get(client, session, "/api/leads"))["items"]
    assert [lead["phone"] for lead in leads] == [CONTACT]
