"""Application events survive a failed publish: the outbox relay sends them later."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from clarin_devkit.testing import eventually, running_app
from clarin_devkit.testing.plugin import TestServers
from clarin_leads.main import create_app


async def outbox_rows(test_servers: TestServers) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(test_servers.database_url)
    try:
        return await conn.fetch("SELECT id, subject, payload FROM leads.outbox")
    finally:
        await conn.close()


async def test_published_events_leave_the_outbox(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Any],
    app_events: Any,
    test_servers: TestServers,
) -> None:
    tenant = new_tenant()
    events = await app_events(tenant.account_id)
    resp = await client.post("/api/leads", json={"name": "Ana"}, headers=tenant.headers)
    assert resp.status_code == 201
    await eventually(lambda: events.of_type("lead_created"))
    assert await outbox_rows(test_servers) == []


async def test_relay_publishes_what_a_failed_publish_left(
    settings_for: Callable[..., Any],
    clean_state: None,
    new_tenant: Callable[[], Any],
    app_events: Any,
    test_servers: TestServers,
) -> None:
    tenant = new_tenant()
    events = await app_events(tenant.account_id)
    app: FastAPI = create_app(settings_for(outbox_relay_interval=3600))
    async with running_app(app) as client:
        outbox = app.state.outbox

        async def failing_publish(_: Any) -> None:  # NATS unreachable right after commit
            return None

        real_publish = outbox.publish
        outbox.publish = failing_publish
        resp = await client.post("/api/leads", json={"name": "Ana"}, headers=tenant.headers)
        assert resp.status_code == 201  # committed: the answer stands
        lead = resp.json()
        outbox.publish = real_publish

        [row] = await outbox_rows(test_servers)
        assert row["subject"] == f"app.{tenant.account_id}.lead_created"
        assert not events.frames
        # too young: the request that wrote it may still be publishing it
        assert await outbox.relay_once() == 0
        assert await outbox.relay_once(grace=0) == 1
        await eventually(lambda: events.of_type("lead_created"))
        [frame] = events.frames
        assert frame["data"]["lead"] == lead
        payload = row["payload"]
        payload = json.loads(payload) if isinstance(payload, str) else payload
        assert frame["id"] == payload["id"] == str(uuid.UUID(str(row["id"])))
        assert await outbox_rows(test_servers) == []
