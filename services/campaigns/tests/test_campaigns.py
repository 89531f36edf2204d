"""The campaigns API and its scheduler, against stand-ins for leads, devices and
messaging: audiences, skips, states, pacing order, at most once, counters."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
from clarin_campaigns.campaigns.repository import furthest_outcomes
from clarin_campaigns.main import create_app

from clarin_devkit.testing import eventually, running_app
from clarin_devkit.testing.plugin import TestServers
from services.campaigns.tests.helpers import (
    FakeMessaging,
    FakeUpstreams,
    Progress,
    Tenant,
    campaigns_settings,
)


def _audience_of(upstreams: FakeUpstreams, tenant: Tenant) -> dict[str, Any]:
    """Five leads tagged vip (one opted out, one without a phone) and one other."""
    upstreams.add_lead(tenant, "Ana", "5215500000001", tags=["vip"])
    upstreams.add_lead(tenant, "Beto", "5215500000002", tags=["vip"])
    upstreams.add_lead(tenant, "Carla", "5215500000003", tags=["vip", "Opt-Out"])
    upstreams.add_lead(tenant, "Dani", None, tags=["vip"])
    upstreams.add_lead(tenant, "Eva", "5215500000005", tags=["vip"])
    upstreams.add_lead(tenant, "Fer", "5215500000006", tags=["other"])
    return {"tag": "vip"}


def _create(tenant: Tenant, audience: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": "Promo de diciembre",
        "device_id": tenant.device_id,
        "body": "Hola {{name}}, 20 % en todo 🎄",
        "audience": audience,
        "per_minute": 60,
        **extra,
    }


async def _campaign(client: httpx.AsyncClient, tenant: Tenant, campaign_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/campaigns/{campaign_id}", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


class TestAccess:
    async def test_401_403_404_422(
        self, client: httpx.AsyncClient, upstreams: FakeUpstreams
    ) -> None:
        t, other = upstreams.new_tenant(), upstreams.new_tenant()
        assert (await client.get("/api/campaigns")).status_code == 401
        agent = await client.get("/api/campaigns", headers=t.agent())
        assert agent.status_code == 403 and agent.json()["error"]["code"] == "forbidden"
        created = await client.post(
            "/api/campaigns", json=_create(t, _audience_of(upstreams, t)), headers=t.headers
        )
        assert created.status_code == 201, created.text
        campaign_id = created.json()["id"]
        for path in ("", "/recipients"):
            foreign = await client.get(f"/api/campaigns/{campaign_id}{path}", headers=other.headers)
            assert foreign.status_code == 404
        start = await client.post(f"/api/campaigns/{campaign_id}/start", headers=other.headers)
        assert start.status_code == 404
        cases = [
            (_create(t, {"tag": "vip", "lead_ids": [str(uuid.uuid4())]}), ["body", "audience"]),
            (_create(t, {}), ["body", "audience"]),
            (_create(t, {"tag": "vip"}, per_minute=61), ["body", "per_minute"]),
            (_create(t, {"tag": "vip"}, body=""), ["body", "body"]),
            (_create(other, {"tag": "vip"}), ["body", "device_id"]),
        ]
        for payload, loc in cases:
            resp = await client.post("/api/campaigns", json=payload, headers=t.headers)
            assert resp.status_code == 422, (payload, resp.text)
            assert loc in [d["loc"][: len(loc)] for d in resp.json()["error"]["details"]]


class TestAudience:
    async def test_counts_skip_opt_out_and_phoneless(
        self, client: httpx.AsyncClient, upstreams: FakeUpstreams
    ) -> None:
        t = upstreams.new_tenant()
        audience = _audience_of(upstreams, t)
        preview = await client.post(
            "/api/campaigns/audience", json={"audience": audience}, headers=t.headers
        )
        assert preview.status_code == 200, preview.text
        assert preview.json()["total"] == 3 and preview.json()["skipped"] == 2
        reasons = {r["name"]: r["skipped"] for r in preview.json()["sample"]}
        assert reasons == {
            "Ana": None,
            "Beto": None,
            "Carla": "opt-out",
            "Dani": "no_phone",
            "Eva": None,
        }

        created = await client.post("/api/campaigns", json=_create(t, audience), headers=t.headers)
        campaign = created.json()
        assert campaign["status"] == "draft" and campaign["per_minute"] == 60
        assert (campaign["total"], campaign["skipped"], campaign["sent"]) == (3, 2, 0)
        assert campaign["audience"] == {"lead_ids": None, "stage": None, "tag": "vip"}
        recipients = await client.get(
            f"/api/campaigns/{campaign['id']}/recipients", headers=t.headers
        )
        assert [(r["name"], r["status"], r["error"]) for r in recipients.json()["items"]] == [
            ("Ana", "waiting", None),
            ("Beto", "waiting", None),
            ("Carla", "skipped", "opt-out"),
            ("Dani", "skipped", "no_phone"),
            ("Eva", "waiting", None),
        ]
        skipped = await client.get(
            f"/api/campaigns/{campaign['id']}/recipients",
            params={"status": "skipped", "limit": 1},
            headers=t.headers,
        )
        first = skipped.json()
        assert [r["name"] for r in first["items"]] == ["Carla"] and first["next_cursor"]
        second = await client.get(
            f"/api/campaigns/{campaign['id']}/recipients",
            params={"status": "skipped", "limit": 1, "cursor": first["next_cursor"]},
            headers=t.headers,
        )
        assert [r["name"] for r in second.json()["items"]] == ["Dani"]

    async def test_by_lead_ids_ignores_unknown_ones(
        self, client: httpx.AsyncClient, upstreams: FakeUpstreams
    ) -> None:
        t = upstreams.new_tenant()
        ana = upstreams.add_lead(t, "Ana", "5215500000001")
        created = await client.post(
            "/api/campaigns",
            json=_create(t, {"lead_ids": [ana, str(uuid.uuid4())]}),
            headers=t.headers,
        )
        assert created.status_code == 201 and created.json()["total"] == 1


class TestRunning:
    async def test_each_lead_once_with_its_name_through_pause_resume_and_receipts(
        self,
        client: httpx.AsyncClient,
        upstreams: FakeUpstreams,
        messaging: FakeMessaging,
        progress: Progress,
    ) -> None:
        t = upstreams.new_tenant()
        created = await client.post(
            "/api/campaigns", json=_create(t, _audience_of(upstreams, t)), headers=t.headers
        )
        campaign_id = created.json()["id"]
        again = await client.post(f"/api/campaigns/{campaign_id}/resume", headers=t.headers)
        assert again.status_code == 409 and again.json()["error"]["code"] == "campaign_state"
        started = await client.post(f"/api/campaigns/{campaign_id}/start", headers=t.headers)
        assert started.status_code == 202 and started.json()["status"] == "running"
        assert started.json()["started_at"]
        await eventually(lambda: len(messaging.requests) >= 1, timeout=10)
        paused = await client.post(f"/api/campaigns/{campaign_id}/pause", headers=t.headers)
        assert paused.json()["status"] == "paused"
        handed = len(messaging.requests)
        resumed = await client.post(f"/api/campaigns/{campaign_id}/resume", headers=t.headers)
        assert resumed.json()["status"] == "running"
        await eventually(lambda: len(messaging.requests) == 3, timeout=15)
        assert handed < 3
        assert messaging.bodies() == [
            "Hola Ana, 20 % en todo 🎄",
            "Hola Beto, 20 % en todo 🎄",
            "Hola Eva, 20 % en todo 🎄",
        ]
        for request in messaging.requests:
            assert request["priority"] == "bulk"
            assert request["client_id"].startswith(f"campaign:{campaign_id}:")
            assert request["device_id"] == t.device_id and request["account_id"] == t.account_id
        assert [r["to"] for r in messaging.requests] == [
            "5215500000001",
            "5215500000002",
            "5215500000005",
        ]
        await eventually(lambda: _counters(client, t, campaign_id, queued=3), timeout=10)
        # receipts move the counters forward only; a late one changes nothing
        ids = [r["message_id"] for r in messaging.requests]
        for status in ("sent", "delivered", "read"):
            await messaging.status(t.account_id, ids[0], status)
        await messaging.status(t.account_id, ids[0], "delivered")
        await messaging.status(t.account_id, ids[1], "sent")
        await messaging.status(t.account_id, ids[2], "failed")
        await eventually(
            lambda: _counters(client, t, campaign_id, sent=2, delivered=1, read=1, failed=1),
            timeout=10,
        )
        done = await eventually(lambda: _status_is(client, t, campaign_id, "done"), timeout=10)
        assert done["finished_at"]
        await eventually(lambda: any(c["status"] == "done" for c in progress.of(campaign_id)))
        seen = progress.of(campaign_id)
        assert seen[-1]["read"] == 1 and seen[-1]["failed"] == 1
        recipients = await client.get(
            f"/api/campaigns/{campaign_id}/recipients", params={"status": "read"}, headers=t.headers
        )
        assert [(r["name"], r["message_id"]) for r in recipients.json()["items"]] == [
            ("Ana", ids[0])
        ]
        listed = await client.get("/api/campaigns", headers=t.headers)
        assert [c["id"] for c in listed.json()["items"]] == [campaign_id]

    async def test_cancel_stops_it_and_a_cancelled_one_cannot_start(
        self, client: httpx.AsyncClient, upstreams: FakeUpstreams, messaging: FakeMessaging
    ) -> None:
        t = upstreams.new_tenant()
        created = await client.post(
            "/api/campaigns", json=_create(t, _audience_of(upstreams, t)), headers=t.headers
        )
        campaign_id = created.json()["id"]
        cancelled = await client.post(f"/api/campaigns/{campaign_id}/cancel", headers=t.headers)
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        start = await client.post(f"/api/campaigns/{campaign_id}/start", headers=t.headers)
        assert start.status_code == 409
        statuses = await client.get(f"/api/campaigns/{campaign_id}/recipients", headers=t.headers)
        assert {r["status"] for r in statuses.json()["items"]} == {"cancelled", "skipped"}

    async def test_a_restart_mid_hand_over_asks_again_with_the_same_ids(
        self,
        upstreams: FakeUpstreams,
        messaging: FakeMessaging,
        test_servers: TestServers,
    ) -> None:
        t = upstreams.new_tenant()
        upstreams.add_lead(t, "Ana", "5215500000001", tags=["one"])
        messaging.answering = False  # the first ask gets no answer, as if we died meanwhile
        app = create_app(campaigns_settings(upstreams))
        async with running_app(app) as client:
            created = await client.post(
                "/api/campaigns", json=_create(t, {"tag": "one"}), headers=t.headers
            )
            campaign_id = created.json()["id"]
            await client.post(f"/api/campaigns/{campaign_id}/start", headers=t.headers)
            conn = await asyncpg.connect(test_servers.database_url)
            try:
                sending = await eventually(
                    lambda: conn.fetchrow(
                        "SELECT status, message_id FROM campaigns.recipients "
                        "WHERE campaign_id = $1 AND status = 'sending'",
                        uuid.UUID(campaign_id),
                    ),
                    timeout=10,
                )
            finally:
                await conn.close()
        messaging.answering = True
        async with running_app(create_app(campaigns_settings(upstreams))) as client:
            await eventually(lambda: len(messaging.requests) == 1, timeout=10)
            await eventually(lambda: _counters(client, t, campaign_id, queued=1), timeout=10)
        [request] = messaging.requests
        assert request["message_id"] == str(sending["message_id"])
        assert request["body"] == "Hola Ana, 20 % en todo 🎄"


async def _counters(
    client: httpx.AsyncClient, tenant: Tenant, campaign_id: str, **expected: int
) -> bool:
    campaign = await _campaign(client, tenant, campaign_id)
    return all(campaign[k] == v for k, v in expected.items())


async def _status_is(
    client: httpx.AsyncClient, tenant: Tenant, campaign_id: str, status: str
) -> dict[str, Any] | None:
    campaign = await _campaign(client, tenant, campaign_id)
    return campaign if campaign["status"] == status else None


def test_a_batch_of_receipts_keeps_each_messages_furthest() -> None:
    # messaging's events arrive in batches: one batch may hold every receipt of a
    # message, a late one included; the UPDATE must see only the furthest
    sent, late, failed = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    batch: list[tuple[str, str, str | None]] = [
        (sent, "sent", None),
        (sent, "delivered", None),
        (sent, "read", None),
        (sent, "delivered", None),
        (late, "failed", "WhatsApp did not take the message"),
        (late, "sent", None),
        (failed, "failed", "WhatsApp did not take the message"),
    ]
    assert furthest_outcomes(batch) == {
        sent: (sent, "read", None),
        late: (late, "sent", None),
        failed: (failed, "failed", "WhatsApp did not take the message"),
    }
