"""Issue 14's "Done when", through the gateway of the running system: a team
inbox (assign, resolve, reopen on inbound, labels), private notes, quick
replies and accent-insensitive search."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from nats.aio.msg import Msg

from clarin_common.nats import connect

from .helpers import Socket, bearer, linked_device, register, sim
from .system import System


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, timeout=15) as c:
        yield c


async def _agent(client: httpx.AsyncClient, admin: dict[str, Any]) -> dict[str, Any]:
    email = f"agent-{uuid.uuid4().hex[:8]}@example.com"
    resp = await client.post(
        "/api/users",
        json={"name": "Luis Agente", "email": email, "password": "agente123", "role": "agent"},
        headers=bearer(admin),
    )
    assert resp.status_code == 201, resp.text
    login = await client.post("/api/auth/login", json={"email": email, "password": "agente123"})
    assert login.status_code == 200
    session: dict[str, Any] = login.json()
    return session


async def _inbound_chat(
    system: System,
    client: httpx.AsyncClient,
    session: dict[str, Any],
    device_id: str,
    phone: str,
    body: str,
) -> dict[str, Any]:
    reply = await sim(
        system.nats_url, device_id, "inbound", {"from": phone, "push_name": "Marta", "body": body}
    )
    assert reply["ok"], reply
    for _ in range(100):
        items = (await client.get("/api/chats", headers=bearer(session))).json()["items"]
        for chat in items:
            if chat["phone"] == phone and chat["last_message_preview"] == body:
                return chat  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no chat from {phone} with {body!r}")


async def _chat_ids(client: httpx.AsyncClient, session: dict[str, Any], **params: Any) -> set[str]:
    resp = await client.get("/api/chats", params=params, headers=bearer(session))
    assert resp.status_code == 200, resp.text
    return {c["id"] for c in resp.json()["items"]}


async def test_assign_resolve_reopen_and_label_filter(
    system: System, client: httpx.AsyncClient
) -> None:
    admin = await register(client)
    agent = await _agent(client, admin)
    stranger = await register(client)
    device = await linked_device(client, admin, system.nats_url, "5215511110000")
    marta = await _inbound_chat(system, client, admin, device["id"], "5215522220000", "Hola")
    pablo = await _inbound_chat(system, client, admin, device["id"], "5215533330000", "Buenas")
    url = f"/api/chats/{marta['id']}"

    async with Socket(system.base_url, agent["access_token"]) as ws:
        # the admin assigns Marta's chat to the agent and labels it
        resp = await client.patch(
            url,
            json={"assigned_to": agent["user"]["id"], "labels": ["Mayorista"]},
            headers=bearer(admin),
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["assigned_to"] == agent["user"]["id"]
        frame = await ws.wait_for(
            lambda f: f["type"] == "chat_updated" and f["data"]["chat"]["id"] == marta["id"]
        )
        assert frame["data"]["chat"]["labels"] == ["mayorista"]

        assert await _chat_ids(client, agent, assigned_to="me") == {marta["id"]}
        assert await _chat_ids(client, admin, assigned_to="none") == {pablo["id"]}
        assert await _chat_ids(client, admin, label="mayorista") == {marta["id"]}

        # a user of another account cannot be assigned; another account cannot touch it
        foreign = await client.patch(
            url, json={"assigned_to": stranger["user"]["id"]}, headers=bearer(admin)
        )
        assert foreign.status_code == 422
        assert ["body", "assigned_to"] in [d["loc"] for d in foreign.json()["error"]["details"]]
        assert (
            await client.patch(url, json={"status": "resolved"}, headers=bearer(stranger))
        ).status_code == 404

        # the agent resolves it; a new message from Marta reopens it
        resolved = await client.patch(url, json={"status": "resolved"}, headers=bearer(agent))
        assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
        assert await _chat_ids(client, agent, assigned_to="me", status="open") == set()
        ws.frames.clear()
        await sim(
            system.nats_url,
            device["id"],
            "inbound",
            {"from": "5215522220000", "body": "Una pregunta más"},
        )
        await ws.wait_for(
            lambda f: (
                f["type"] == "chat_updated"
                and f["data"]["chat"]["id"] == marta["id"]
                and f["data"]["chat"]["status"] == "open"
            )
        )
    chat = (await client.get(url, headers=bearer(agent))).json()
    assert (chat["status"], chat["assigned_to"]) == ("open", agent["user"]["id"])
    assert await _chat_ids(client, agent, assigned_to="me", status="open") == {marta["id"]}


async def test_notes_never_reach_the_phone(system: System, client: httpx.AsyncClient) -> None:
    session = await register(client)
    device = await linked_device(client, session, system.nats_url, "5215511110001")
    chat = await _inbound_chat(
        system, client, session, device["id"], "5215544440000", "¿Hacen envíos?"
    )

    # everything that travels towards the workers and the simulated phone
    seen: list[tuple[str, bytes]] = []
    nc = await connect(system.nats_url, name="e2e-watch")

    async def watch(msg: Msg) -> None:
        seen.append((msg.subject, msg.data))

    await nc.subscribe("wa.>", cb=watch)
    await nc.subscribe("sim.>", cb=watch)
    await nc.flush()
    try:
        note = await client.post(
            f"/api/chats/{chat['id']}/notes",
            json={"body": "NOTA-PRIVADA: cliente moroso"},
            headers=bearer(session),
        )
        assert note.status_code == 201, note.text
        assert note.json()["direction"] == "note"

        # a real reply afterwards goes out and is accepted by the phone...
        reply = await client.post(
            "/api/messages/send",
            json={"chat_id": chat["id"], "body": "Sí, a todo el país"},
            headers=bearer(session),
        )
        assert reply.status_code == 202, reply.text
        reply_id = reply.json()["id"]
        for _ in range(100):
            got = await client.get(f"/api/chats/{chat['id']}/messages", headers=bearer(session))
            statuses = {m["id"]: m["status"] for m in got.json()["items"]}
            if statuses.get(reply_id) in ("sent", "delivered", "read"):
                break
            await asyncio.sleep(0.1)
        assert statuses.get(reply_id) in ("sent", "delivered", "read"), statuses
        await nc.flush()
    finally:
        await nc.close()
    # ...and the bus carried the reply towards it, but never the note
    assert any(b"a todo el pa" in data for _, data in seen)
    assert not [subject for subject, data in seen if b"NOTA-PRIVADA" in data]

    timeline = (
        await client.get(f"/api/chats/{chat['id']}/messages", headers=bearer(session))
    ).json()["items"]
    assert [m["direction"] for m in timeline] == ["out", "note", "in"]


async def test_quick_reply_crud_with_409(client: httpx.AsyncClient) -> None:
    session, other = await register(client), await register(client)
    created = await client.post(
        "/api/quick-replies",
        json={"shortcut": "saludo", "body": "¡Hola {{name}}!"},
        headers=bearer(session),
    )
    assert created.status_code == 201, created.text
    reply = created.json()
    dup = await client.post(
        "/api/quick-replies", json={"shortcut": "saludo", "body": "x"}, headers=bearer(session)
    )
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "shortcut_taken"
    bad = await client.post(
        "/api/quick-replies", json={"shortcut": "con espacio", "body": "x"}, headers=bearer(session)
    )
    assert bad.status_code == 422
    url = f"/api/quick-replies/{reply['id']}"
    assert (await client.put(url, json={"body": "x"}, headers=bearer(other))).status_code == 404
    updated = await client.put(url, json={"body": "¡Buenas, {{name}}!"}, headers=bearer(session))
    assert updated.status_code == 200 and updated.json()["body"] == "¡Buenas, {{name}}!"
    listed = await client.get("/api/quick-replies", headers=bearer(session))
    assert [r["shortcut"] for r in listed.json()["items"]] == ["saludo"]
    assert (await client.delete(url, headers=bearer(session))).status_code == 204
    assert (await client.get("/api/quick-replies", headers=bearer(session))).json() == {"items": []}
    assert (await client.get("/api/quick-replies")).status_code == 401


async def test_search_finds_cafe_by_cafe(system: System, client: httpx.AsyncClient) -> None:
    session, other = await register(client), await register(client)
    device = await linked_device(client, session, system.nats_url, "5215511110002")
    chat = await _inbound_chat(
        system, client, session, device["id"], "5215555550000", "¿Tienen café de Oaxaca?"
    )
    await _inbound_chat(system, client, session, device["id"], "5215566660000", "Quiero té")
    resp = await client.get("/api/search/messages", params={"q": "cafe"}, headers=bearer(session))
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    assert [(i["message"]["body"], i["chat"]["id"]) for i in items] == [
        ("¿Tienen café de Oaxaca?", chat["id"])
    ]
    assert (
        await client.get("/api/search/messages", params={"q": "CAFÉ"}, headers=bearer(other))
    ).json()["items"] == []
    assert (
        await client.get("/api/search/messages", params={"q": "?!"}, headers=bearer(session))
    ).status_code == 422
