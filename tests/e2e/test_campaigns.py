"""Issue 15, campaigns, through the gateway of the running system with the
simulator: each remaining lead gets its message once, with its name, through a
pause/resume and a kill -9 of the worker that holds the device."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from clarin_devkit.testing import eventually

from .helpers import Socket, bearer, linked_device, register
from .system import System
from .test_outbound_queue import _owner, phone_of


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, timeout=15) as c:
        yield c


async def _campaign(
    client: httpx.AsyncClient, session: dict[str, Any], campaign_id: str
) -> dict[str, Any]:
    resp = await client.get(f"/api/campaigns/{campaign_id}", headers=bearer(session))
    assert resp.status_code == 200, resp.text
    campaign: dict[str, Any] = resp.json()
    return campaign


async def test_a_campaign_reaches_each_remaining_lead_once_through_pause_and_a_worker_kill(
    client: httpx.AsyncClient, system: System
) -> None:
    session = await register(client)
    device = await linked_device(client, session, system.nats_url, "5215570000009")
    names = [f"Cliente {i:02d}" for i in range(10)]
    phones = {name: f"52155800000{i:02d}" for i, name in enumerate(names)}
    for i, name in enumerate(names):
        lead = {"name": name, "phone": phones[name], "tags": ["promo"]}
        if i in (2, 7):
            lead["tags"] = ["promo", "opt-out"]
        resp = await client.post("/api/leads", json=lead, headers=bearer(session))
        assert resp.status_code == 201, resp.text
    for name in ("Sin Teléfono 1", "Sin Teléfono 2"):
        resp = await client.post(
            "/api/leads", json={"name": name, "tags": ["promo"]}, headers=bearer(session)
        )
        assert resp.status_code == 201, resp.text
    reached = [n for i, n in enumerate(names) if i not in (2, 7)]

    preview = await client.post(
        "/api/campaigns/audience", json={"audience": {"tag": "promo"}}, headers=bearer(session)
    )
    assert preview.status_code == 200, preview.text
    assert (preview.json()["total"], preview.json()["skipped"]) == (8, 4)
    created = await client.post(
        "/api/campaigns",
        json={
            "name": "Navidad",
            "device_id": device["id"],
            "body": "Hola {{name}}, tenemos ofertas 🎁",
            "audience": {"tag": "promo"},
            "per_minute": 60,
        },
        headers=bearer(session),
    )
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    assert created.json()["total"] == 8 and created.json()["skipped"] == 4

    async with (
        phone_of(system, device["id"]) as phone,
        Socket(system.base_url, session["access_token"]) as socket,
    ):
        start = await client.post(f"/api/campaigns/{campaign_id}/start", headers=bearer(session))
        assert start.status_code == 202 and start.json()["status"] == "running"
        await eventually(lambda: len(phone.received()) >= 2, timeout=30, interval=0.05)
        paused = await client.post(f"/api/campaigns/{campaign_id}/pause", headers=bearer(session))
        assert paused.json()["status"] == "paused"
        resumed = await client.post(f"/api/campaigns/{campaign_id}/resume", headers=bearer(session))
        assert resumed.json()["status"] == "running"
        await eventually(lambda: len(phone.received()) >= 4, timeout=30, interval=0.05)
        owner = await _owner(system, device["id"])
        await asyncio.to_thread(system.kill, owner)
        system.start(owner)
        await asyncio.to_thread(system.wait_ready, owner)
        await eventually(lambda: len(phone.received()) == 8, timeout=90, interval=0.2)
        # each remaining lead once, with its own name, at its own phone
        got = {m["to"].split("@")[0]: m["body"] for m in phone.seen}
        assert got == {phones[n]: f"Hola {n}, tenemos ofertas 🎁" for n in reached}
        assert len(phone.received()) == 8

        done = await eventually(
            lambda: _done(client, session, campaign_id), timeout=60, interval=0.5
        )
        # receipts the killed worker's simulated phones still owed died with it
        assert (done["sent"], done["failed"], done["queued"]) == (8, 0, 0)
        # receipts keep the counters moving after it is done
        await eventually(
            lambda: _read_at_least(client, session, campaign_id, 4), timeout=30, interval=0.5
        )
        frame = await socket.wait_for(
            lambda f: (
                f["type"] == "campaign_progress"
                and f["data"]["campaign"]["id"] == campaign_id
                and f["data"]["campaign"]["status"] == "done"
            ),
            timeout=30,
        )
        assert frame["data"]["campaign"]["total"] == 8
    recipients = await client.get(
        f"/api/campaigns/{campaign_id}/recipients", headers=bearer(session)
    )
    statuses = {r["name"]: r["status"] for r in recipients.json()["items"]}
    assert all(statuses[n] in ("sent", "delivered", "read") for n in reached), statuses
    assert statuses == {
        **{n: statuses[n] for n in reached},
        names[2]: "skipped",
        names[7]: "skipped",
        "Sin Teléfono 1": "skipped",
        "Sin Teléfono 2": "skipped",
    }


async def _done(
    client: httpx.AsyncClient, session: dict[str, Any], campaign_id: str
) -> dict[str, Any] | None:
    campaign = await _campaign(client, session, campaign_id)
    return campaign if campaign["status"] == "done" and campaign["sent"] == 8 else None


async def _read_at_least(
    client: httpx.AsyncClient, session: dict[str, Any], campaign_id: str, count: int
) -> bool:
    return bool((await _campaign(client, session, campaign_id))["read"] >= count)
