"""The webhooks API: one class per endpoint (401, agent 403, other account 404,
422 with the field named, happy path)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg
import httpx

from clarin_devkit.testing import eventually, running_app
from clarin_webhooks.main import create_app
from services.webhooks.tests.helpers import (
    AppEvents,
    DeliveryJson,
    SettingsMaker,
    Tenant,
    WebhookMaker,
    delivery_of,
    newest_delivery,
)
from tests.webhook_receiver import Receiver, verified

WEBHOOK_FIELDS = {"id", "url", "events", "active", "created_at"}
URL = "http://127.0.0.1:9/hook"  # dev/test rules: a local receiver is fine


Loc = list[str | int]


def field_errors(resp: httpx.Response) -> list[Loc]:
    assert resp.status_code == 422, resp.text
    body = resp.json()["error"]
    assert body["code"] == "validation_error"
    return [d["loc"] for d in body["details"]]


def assert_forbidden(resp: httpx.Response) -> None:
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["code"] == "forbidden"


class TestCreateWebhook:
    async def test_requires_a_token(self, client: httpx.AsyncClient) -> None:
        resp = await client.post("/api/webhooks", json={"url": URL, "events": ["*"]})
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "unauthorized"

    async def test_agents_may_not(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()
        resp = await client.post(
            "/api/webhooks", json={"url": URL, "events": ["*"]}, headers=tenant.agent_headers
        )
        assert_forbidden(resp)

    async def test_creates_with_a_generated_secret_shown_once(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], db: asyncpg.Connection
    ) -> None:
        tenant = new_tenant()
        resp = await client.post(
            "/api/webhooks",
            json={"url": f" {URL} ", "events": ["lead_created", "new_message", "lead_created"]},
            headers=tenant.headers,
        )
        assert resp.status_code == 201, resp.text
        created = resp.json()
        assert set(created) == WEBHOOK_FIELDS | {"secret"}
        assert created["url"] == URL
        assert created["events"] == ["lead_created", "new_message"]
        assert created["active"] is True
        assert created["secret"].startswith("whsec_") and len(created["secret"]) > 30

        listed = (await client.get("/api/webhooks", headers=tenant.headers)).json()["items"]
        assert [w["id"] for w in listed] == [created["id"]]
        assert set(listed[0]) == WEBHOOK_FIELDS  # never the secret again
        got = await client.get(f"/api/webhooks/{created['id']}", headers=tenant.headers)
        assert "secret" not in got.json()

        # at rest the secret is encrypted: the row alone does not give it away
        stored = await db.fetchval(
            "SELECT secret_encrypted FROM webhooks WHERE id = $1", uuid.UUID(created["id"])
        )
        assert created["secret"] not in stored

    async def test_keeps_a_given_secret_and_star_stands_alone(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()
        resp = await client.post(
            "/api/webhooks",
            json={"url": URL, "events": ["chat_read", "*"], "secret": "s3cret-of-my-own-123"},
            headers=tenant.headers,
        )
        assert resp.status_code == 201, resp.text
        assert resp.json()["secret"] == "s3cret-of-my-own-123"
        assert resp.json()["events"] == ["*"]

    async def test_accepts_the_second_wave_event_types(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()
        resp = await client.post(
            "/api/webhooks",
            json={"url": URL, "events": ["campaign_progress", "chat_updated"]},
            headers=tenant.headers,
        )
        assert resp.status_code == 201, resp.text

    async def test_names_the_bad_fields(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()
        cases: list[tuple[dict[str, object], Loc]] = [
            ({"events": ["*"]}, ["body", "url"]),
            ({"url": "", "events": ["*"]}, ["body", "url"]),
            ({"url": "ftp://example.com/x", "events": ["*"]}, ["body", "url"]),
            ({"url": "http://", "events": ["*"]}, ["body", "url"]),
            ({"url": "http://example.com/" + "x" * 2100, "events": ["*"]}, ["body", "url"]),
            ({"url": URL}, ["body", "events"]),
            ({"url": URL, "events": []}, ["body", "events"]),
            ({"url": URL, "events": ["lead_created", "nope"]}, ["body", "events"]),
            ({"url": URL, "events": "lead_created"}, ["body", "events"]),
            ({"url": URL, "events": ["*"], "secret": "short"}, ["body", "secret"]),
            ({"url": URL, "events": ["*"], "secret": "has spaces in it, no"}, ["body", "secret"]),
            ({"url": URL, "events": ["*"], "active": False}, ["body", "active"]),
        ]
        for body, loc in cases:
            resp = await client.post("/api/webhooks", json=body, headers=tenant.headers)
            assert loc in field_errors(resp), (body, resp.text)
        unknown = await client.post(
            "/api/webhooks", json={"url": URL, "events": ["nope"]}, headers=tenant.headers
        )
        assert "lead_created" in unknown.json()["error"]["details"][0]["msg"]
        assert (await client.get("/api/webhooks", headers=tenant.headers)).json()["items"] == []


class TestEventTypes:
    async def test_lists_the_websocket_types(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()
        assert (await client.get("/api/webhooks/event-types")).status_code == 401
        assert_forbidden(
            await client.get("/api/webhooks/event-types", headers=tenant.agent_headers)
        )
        items = (await client.get("/api/webhooks/event-types", headers=tenant.headers)).json()[
            "items"
        ]
        assert {"new_message", "lead_created", "campaign_progress", "chat_updated"} <= set(items)


class TestListWebhooks:
    async def test_only_the_callers_account(
        self,
        client: httpx.AsyncClient,
        new_tenant: Callable[[], Tenant],
        make_webhook: WebhookMaker,
    ) -> None:
        a, b = new_tenant(), new_tenant()
        assert (await client.get("/api/webhooks")).status_code == 401
        assert_forbidden(await client.get("/api/webhooks", headers=a.agent_headers))
        first = await make_webhook(a, URL)
        second = await make_webhook(a, URL + "2", events=["lead_created"])
        await make_webhook(b, URL)
        items = (await client.get("/api/webhooks", headers=a.headers)).json()["items"]
        assert [w["id"] for w in items] == [first["id"], second["id"]]


class TestGetWebhook:
    async def test_other_account_and_garbage_are_404(
        self,
        client: httpx.AsyncClient,
        new_tenant: Callable[[], Tenant],
        make_webhook: WebhookMaker,
    ) -> None:
        a, b = new_tenant(), new_tenant()
        hook = await make_webhook(a, URL)
        assert (await client.get(f"/api/webhooks/{hook['id']}")).status_code == 401
        for path in (hook["id"], str(uuid.uuid4()), "not-a-uuid"):
            resp = await client.get(f"/api/webhooks/{path}", headers=b.headers)
            assert resp.status_code == 404
            assert resp.json()["error"]["code"] == "webhook_not_found"
        assert (await client.get(f"/api/webhooks/{hook['id']}", headers=a.headers)).json()[
            "url"
        ] == URL


class TestUpdateWebhook:
    async def test_rules(
        self,
        client: httpx.AsyncClient,
        new_tenant: Callable[[], Tenant],
        make_webhook: WebhookMaker,
    ) -> None:
        a, b = new_tenant(), new_tenant()
        hook = await make_webhook(a, URL)
        path = f"/api/webhooks/{hook['id']}"
        assert (await client.patch(path, json={"active": False})).status_code == 401
        assert_forbidden(await client.patch(path, json={"active": False}, headers=a.agent_headers))
        other = await client.patch(path, json={"active": False}, headers=b.headers)
        assert other.status_code == 404

        for body, loc in [
            ({"url": None}, ["body", "url"]),
            ({"url": "gopher://x"}, ["body", "url"]),
            ({"events": []}, ["body", "events"]),
            ({"events": ["bogus"]}, ["body", "events"]),
            ({"active": None}, ["body", "active"]),
            ({"active": "maybe"}, ["body", "active"]),
            ({"secret": "a-new-secret-value-1"}, ["body", "secret"]),
        ]:
            resp = await client.patch(path, json=body, headers=a.headers)
            assert loc in field_errors(resp), (body, resp.text)

        resp = await client.patch(
            path,
            json={"active": False, "events": ["lead_updated"], "url": URL + "/v2"},
            headers=a.headers,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json() | {"created_at": None} == {
            "id": hook["id"],
            "url": URL + "/v2",
            "events": ["lead_updated"],
            "active": False,
            "created_at": None,
        }
        # an empty patch changes nothing and still answers the webhook
        same = await client.patch(path, json={}, headers=a.headers)
        assert same.status_code == 200 and same.json()["active"] is False
        # b's attempt changed nothing of a's
        assert (await client.get(path, headers=a.headers)).json()["url"] == URL + "/v2"


class TestDeleteWebhook:
    async def test_rules(
        self,
        client: httpx.AsyncClient,
        new_tenant: Callable[[], Tenant],
        make_webhook: WebhookMaker,
    ) -> None:
        a, b = new_tenant(), new_tenant()
        hook = await make_webhook(a, URL)
        path = f"/api/webhooks/{hook['id']}"
        assert (await client.delete(path)).status_code == 401
        assert_forbidden(await client.delete(path, headers=a.agent_headers))
        assert (await client.delete(path, headers=b.headers)).status_code == 404
        assert (await client.get(path, headers=a.headers)).status_code == 200
        assert (await client.delete(path, headers=a.headers)).status_code == 204
        assert (await client.delete(path, headers=a.headers)).status_code == 404
        assert (await client.get("/api/webhooks", headers=a.headers)).json()["items"] == []


class TestDeliveriesLog:
    async def test_rules_and_paging(
        self,
        client: httpx.AsyncClient,
        new_tenant: Callable[[], Tenant],
        make_webhook: WebhookMaker,
        receiver: Receiver,
        app_events: AppEvents,
    ) -> None:
        a, b = new_tenant(), new_tenant()
        hook = await make_webhook(a, receiver.url + "/hook")
        path = f"/api/webhooks/{hook['id']}/deliveries"
        assert (await client.get(path)).status_code == 401
        assert_forbidden(await client.get(path, headers=a.agent_headers))
        assert (await client.get(path, headers=b.headers)).status_code == 404
        assert (await client.get(path, headers=a.headers)).json() == {
            "items": [],
            "next_cursor": None,
        }

        ids = [await app_events.chat_read(a.account_id, f"chat-{i}") for i in range(5)]
        await receiver.wait_for(lambda r: len(r.accepted()) == 5)

        async def all_delivered() -> bool:
            items = (await client.get(path, headers=a.headers)).json()["items"]
            return len(items) == 5 and all(d["status"] == "delivered" for d in items)

        await eventually(all_delivered, timeout=10)
        seen: list[DeliveryJson] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get(path, params=params, headers=a.headers)).json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == 5  # in pages of two: 2, 2, 1
        assert sorted(d["event_id"] for d in seen) == sorted(ids)
        first = seen[0]
        assert {
            "id",
            "event_type",
            "status_code",
            "attempt",
            "error",
            "delivered_at",
            "next_attempt_at",
        } <= set(first)
        assert first["status_code"] == 200 and first["attempt"] == 1
        assert first["error"] is None and first["next_attempt_at"] is None
        assert first["delivered_at"] is not None
        # newest first
        assert [d["created_at"] for d in seen] == sorted(
            (d["created_at"] for d in seen), reverse=True
        )
        assert {r.delivery_id for r in receiver.requests} == {d["id"] for d in seen}

        filtered = await client.get(path, params={"status": "failed"}, headers=a.headers)
        assert filtered.json()["items"] == []
        bad: list[tuple[str, str | int]] = [("cursor", "garbage"), ("limit", 0), ("status", "lost")]
        for name, value in bad:
            resp = await client.get(path, params={name: value}, headers=a.headers)
            assert ["query", name] in field_errors(resp)


class TestRedeliver:
    async def test_rules_and_same_delivery_id(
        self,
        client: httpx.AsyncClient,
        new_tenant: Callable[[], Tenant],
        make_webhook: WebhookMaker,
        receiver: Receiver,
        app_events: AppEvents,
    ) -> None:
        a, b = new_tenant(), new_tenant()
        hook = await make_webhook(a, receiver.url + "/hook")
        await app_events.chat_read(a.account_id)
        await receiver.wait_for(lambda r: len(r.accepted()) == 1)
        log = f"/api/webhooks/{hook['id']}/deliveries"

        delivery = await newest_delivery(client, a, hook, lambda d: d["status"] == "delivered")
        path = f"{log}/{delivery['id']}/redeliver"
        assert (await client.post(path)).status_code == 401
        assert_forbidden(await client.post(path, headers=a.agent_headers))
        # b may not redeliver a's delivery, even through a webhook of b's own
        assert (await client.post(path, headers=b.headers)).status_code == 404
        b_hook = await make_webhook(b, receiver.url + "/b")
        foreign = f"/api/webhooks/{b_hook['id']}/deliveries/{delivery['id']}/redeliver"
        assert (await client.post(foreign, headers=b.headers)).status_code == 404
        missing = f"{log}/{uuid.uuid4()}/redeliver"
        assert (await client.post(missing, headers=a.headers)).json()["error"][
            "code"
        ] == "delivery_not_found"
        assert len(receiver.requests) == 1

        assert delivery_of(await client.post(path, headers=a.headers))["id"] == delivery["id"]
        await receiver.wait_for(lambda r: len(r.accepted()) == 2)
        first, again = receiver.requests
        assert first.delivery_id == again.delivery_id == delivery["id"]
        assert first.body == again.body
        assert verified(again, hook["secret"])

        await newest_delivery(
            client, a, hook, lambda d: d["status"] == "delivered" and d["attempt"] == 2
        )


class TestWebhookLimit:
    async def test_an_account_has_at_most_the_limit(
        self, new_tenant: Callable[[], Tenant], clean_state: None, fast_settings: SettingsMaker
    ) -> None:
        a, b = new_tenant(), new_tenant()
        async with running_app(create_app(fast_settings(max_per_account=2))) as client:

            async def create(tenant: Tenant) -> httpx.Response:
                return await client.post(
                    "/api/webhooks", json={"url": URL, "events": ["*"]}, headers=tenant.headers
                )

            first = await create(a)
            assert (await create(a)).status_code == 201
            third = await create(a)
            assert third.status_code == 409, third.text
            assert third.json()["error"]["code"] == "webhook_limit_reached"
            assert (await create(b)).status_code == 201  # per account
            gone = await client.delete(f"/api/webhooks/{first.json()['id']}", headers=a.headers)
            assert gone.status_code == 204
            assert (await create(a)).status_code == 201
            listed = await client.get("/api/webhooks", headers=a.headers)
            assert len(listed.json()["items"]) == 2
