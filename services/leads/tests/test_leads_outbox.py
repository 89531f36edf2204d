"""Application events survive a failed publish: the outbox relay sends them later."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from clarin_common.app import service_context
from clarin_common.outbox import PendingEvent
from clarin_devkit.testing import eventually, running_app
from clarin_devkit.testing.plugin import TestServers
from clarin_leads.deps import LeadsContext
from clarin_leads.main import create_app
from clarin_leads.settings import LeadsSettings
from services.leads.tests.helpers import AppEventsFeed, Tenant


async def outbox_rows(test_servers: TestServers) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(test_servers.database_url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT id, subject, payload FROM leads.outbox"
        )
        return rows
    finally:
        await conn.close()


async def test_published_events_leave_the_outbox(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    app_events: AppEventsFeed,
    test_servers: TestServers,
) -> None:
    tenant = new_tenant()
    events = await app_events(tenant.account_id)
    resp = await client.post("/api/leads", json={"name": "Ana"}, headers=tenant.headers)
    assert resp.status_code == 201
    await eventually(lambda: events.of_type("lead_created"))
    assert await outbox_rows(test_servers) == []


async def test_relay_publishes_what_a_failed_publish_left(
    settings_for: Callable[..., LeadsSettings],
    clean_state: None,
    new_tenant: Callable[[], Tenant],
    app_events: AppEventsFeed,
    test_servers: TestServers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = new_tenant()
    events = await app_events(tenant.account_id)
    app: FastAPI = create_app(settings_for(outbox_relay_interval=3600))
    async with running_app(app) as client:
        outbox = service_context(app, LeadsContext).outbox

        async def nats_unreachable(_: Sequence[PendingEvent]) -> None:
            return None  # what Outbox.publish does when NATS is down right after commit

        with monkeypatch.context() as patch:
            patch.setattr(outbox, "publish", nats_unreachable)
            resp = await client.post("/api/leads", json={"name": "Ana"}, headers=tenant.headers)
        assert resp.status_code == 201  # committed: the answer stands
        lead = resp.json()

        [row] = await outbox_rows(test_servers)
        assert row["subject"] == f"app.{tenant.account_id}.lead_created"
        # too young: the request that wrote it may still be publishing it
        assert await outbox.relay_once() == 0
        assert await outbox.relay_once(grace=0) == 1
        await eventually(lambda: events.of_type("lead_created"))
        [frame] = events.frames
        assert frame["data"]["lead"] == lead
        assert frame["id"] == json.loads(row["payload"])["id"] == str(uuid.UUID(str(row["id"])))
        assert await outbox_rows(test_servers) == []
