"""Webhooks through the gateway of the running system (issue 15's "Done when")."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from clarin_devkit.testing import eventually, free_port
from tests.webhook_receiver import Receiver, serving, verified

from .helpers import bearer, register
from .system import System


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, timeout=15) as c:
        yield c


async def add_webhook(
    client: httpx.AsyncClient, session: dict[str, Any], url: str, events: list[str]
) -> dict[str, Any]:
    resp = await client.post(
        "/api/webhooks", json={"url": url, "events": events}, headers=bearer(session)
    )
    assert resp.status_code == 201, resp.text
    webhook: dict[str, Any] = resp.json()
    return webhook


async def add_lead(client: httpx.AsyncClient, session: dict[str, Any], name: str) -> str:
    resp = await client.post("/api/leads", json={"name": name}, headers=bearer(session))
    assert resp.status_code == 201, resp.text
    lead_id: str = resp.json()["id"]
    return lead_id


async def deliveries(
    client: httpx.AsyncClient, session: dict[str, Any], webhook: dict[str, Any]
) -> list[dict[str, Any]]:
    resp = await client.get(
        f"/api/webhooks/{webhook['id']}/deliveries",
        params={"limit": 200},
        headers=bearer(session),
    )
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def lead_ids(receiver: Receiver) -> set[str]:
    return {r.json()["data"]["lead"]["id"] for r in receiver.accepted()}


async def test_signed_deliveries_of_real_events(client: httpx.AsyncClient) -> None:
    admin, other = await register(client), await register(client)
    async with serving(Receiver()) as receiver:
        hook = await add_webhook(client, admin, receiver.url + "/crm", ["lead_created"])
        await add_webhook(client, other, receiver.url + "/other", ["*"])
        lead_id = await add_lead(client, admin, "Lucía Ñandú 🌵")
        await receiver.wait_for(lambda r: len(r.accepted(lambda x: x.path == "/crm")) == 1)
        (got,) = receiver.accepted(lambda x: x.path == "/crm")
        assert verified(got, hook["secret"])
        assert got.event_type == "lead_created"
        body = got.json()
        assert body["type"] == "lead_created" and body["account_id"] == admin["account"]["id"]
        assert body["data"]["lead"]["id"] == lead_id
        assert body["data"]["lead"]["name"] == "Lucía Ñandú 🌵"
        # the other account's webhook never hears of it
        assert receiver.accepted(lambda x: x.path == "/other") == []

        # an agent may not manage webhooks; the other admin cannot see this one
        email = f"agent-{uuid.uuid4().hex[:8]}@example.com"
        resp = await client.post(
            "/api/users",
            json={"name": "Agente", "email": email, "password": "agente-123", "role": "agent"},
            headers=bearer(admin),
        )
        assert resp.status_code == 201, resp.text
        login = await client.post(
            "/api/auth/login", json={"email": email, "password": "agente-123"}
        )
        agent = login.json()
        listed = await client.get("/api/webhooks", headers=bearer(agent))
        assert listed.status_code == 403 and listed.json()["error"]["code"] == "forbidden"
        foreign = await client.get(f"/api/webhooks/{hook['id']}", headers=bearer(other))
        assert foreign.status_code == 404

    # the gateway's merged API document carries the webhooks routes
    doc = (await client.get("/api/openapi.json")).json()
    assert "/api/webhooks/{webhook_id}/deliveries" in doc["paths"]
    assert "webhooks" not in doc.get("x-unavailable-services", [])


async def test_500_twice_then_the_same_delivery_id(client: httpx.AsyncClient) -> None:
    admin = await register(client)
    async with serving(Receiver()) as receiver:
        hook = await add_webhook(client, admin, receiver.url + "/hook", ["lead_created"])
        receiver.plan = [500, 500]
        await add_lead(client, admin, "Ana")
        await receiver.wait_for(lambda r: len(r.accepted()) == 1, timeout=30)
        assert [r.status for r in receiver.requests] == [500, 500, 200]
        assert len({r.delivery_id for r in receiver.requests}) == 1
        assert all(verified(r, hook["secret"]) for r in receiver.requests)

        async def logged() -> bool:
            (row,) = await deliveries(client, admin, hook)
            return bool(row["status"] == "delivered" and row["attempt"] == 3)

        await eventually(logged, timeout=10)


async def test_a_receiver_down_for_a_while_gets_everything(client: httpx.AsyncClient) -> None:
    admin = await register(client)
    port = free_port()
    hook = await add_webhook(client, admin, f"http://127.0.0.1:{port}/hook", ["lead_created"])
    created = {await add_lead(client, admin, f"Lead {i}") for i in range(15)}

    async def failing() -> bool:
        rows = await deliveries(client, admin, hook)
        return len(rows) == 15 and all(r["attempt"] >= 2 and r["error"] for r in rows)

    await eventually(failing, timeout=30)
    async with serving(Receiver(), port=port) as receiver:
        await receiver.wait_for(lambda r: lead_ids(r) == created, timeout=30)
        assert all(verified(r, hook["secret"]) for r in receiver.accepted())


async def test_a_killed_webhooks_service_loses_nothing(
    system: System, client: httpx.AsyncClient
) -> None:
    admin = await register(client)
    async with serving(Receiver()) as receiver:
        hook = await add_webhook(client, admin, receiver.url + "/hook", ["lead_created"])
        created = {await add_lead(client, admin, f"Antes {i}") for i in range(10)}
        await receiver.wait_for(lambda r: len(r.accepted()) >= 1, timeout=30)
        await asyncio.to_thread(system.kill, "webhooks")
        # events go on while the service is down (they wait in APP_EVENTS)
        created |= {await add_lead(client, admin, f"Durante {i}") for i in range(10)}
        system.start("webhooks")
        await asyncio.to_thread(system.wait_ready, "webhooks")
        created |= {await add_lead(client, admin, f"Después {i}") for i in range(10)}
        await receiver.wait_for(lambda r: lead_ids(r) == created, timeout=60)
        # at least once: a repeat (killed mid-attempt) keeps its delivery id
        by_event: dict[str, set[str]] = {}
        for r in receiver.accepted():
            by_event.setdefault(r.json()["id"], set()).add(r.delivery_id)
        assert len(by_event) == 30 and all(len(ids) == 1 for ids in by_event.values())
        assert all(verified(r, hook["secret"]) for r in receiver.accepted())
        rows = await deliveries(client, admin, hook)
        assert len(rows) == 30
