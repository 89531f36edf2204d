"""The leads API of API.md: one class per endpoint (401, other account → 404,
422 with the field named, 409, happy path)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from clarin_devkit.testing import auth_headers, eventually, make_token
from services.leads.tests.helpers import AppEventsFeed, FakeAuth, Tenant

LEAD_FIELDS = {
    "id",
    "account_id",
    "name",
    "phone",
    "email",
    "company",
    "stage",
    "tags",
    "notes",
    "value",
    "assigned_to",
    "source",
    "chat_id",
    "last_contact_at",
    "created_at",
    "updated_at",
}


def field_errors(resp: httpx.Response) -> list[list[Any]]:
    assert resp.status_code == 422, resp.text
    body = resp.json()["error"]
    assert body["code"] == "validation_error"
    return [d["loc"] for d in body["details"]]


async def create(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "Ana López")
    resp = await client.post("/api/leads", json=body, headers=tenant.headers)
    assert resp.status_code == 201, resp.text
    lead: dict[str, Any] = resp.json()
    return lead


class TestCreateLead:
    async def test_requires_a_token(self, client: httpx.AsyncClient) -> None:
        resp = await client.post("/api/leads", json={"name": "Ana"})
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "unauthorized"

    async def test_expired_token(self, client: httpx.AsyncClient) -> None:
        from datetime import timedelta

        token = make_token(ttl=timedelta(seconds=-60))
        resp = await client.post("/api/leads", json={"name": "Ana"}, headers=auth_headers(token))
        assert resp.status_code == 401

    async def test_creates_a_manual_lead(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], app_events: AppEventsFeed
    ) -> None:
        tenant = new_tenant()
        agent = tenant.add_user()
        events = await app_events(tenant.account_id)
        resp = await client.post(
            "/api/leads",
            json={
                "name": "  Ana López ",
                "phone": "+52 1 55 1234-5678",
                "email": "Ana@Example.COM",
                "company": "Acme",
                "stage": "qualified",
                "tags": [" vip ", "VIP", "", "norte"],
                "notes": "Llamar el lunes",
                "value": 1500.5,
                "assigned_to": agent,
            },
            headers=tenant.headers,
        )
        assert resp.status_code == 201, resp.text
        lead = resp.json()
        assert set(lead) == LEAD_FIELDS
        assert lead["account_id"] == tenant.account_id
        assert lead["name"] == "Ana López"
        assert lead["phone"] == "5215512345678"
        assert lead["email"] == "Ana@example.com"
        assert lead["stage"] == "qualified"
        assert lead["tags"] == ["vip", "norte"]
        assert lead["value"] == 1500.5
        assert lead["assigned_to"] == agent
        assert lead["source"] == "manual"
        assert lead["chat_id"] is None and lead["last_contact_at"] is None
        assert lead["created_at"].endswith(("Z", "+00:00"))

        got = await client.get(f"/api/leads/{lead['id']}", headers=tenant.headers)
        assert got.json() == lead

        await eventually(lambda: events.of_type("lead_created"))
        frame = events.of_type("lead_created")[0]
        assert frame["subject"] == f"app.{tenant.account_id}.lead_created"
        assert frame["account_id"] == tenant.account_id
        assert frame["data"]["lead"] == lead

    async def test_minimal_lead_defaults(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        lead = await create(client, new_tenant(), name="Solo nombre")
        assert lead["stage"] == "new"
        assert lead["tags"] == []
        assert lead["phone"] is None and lead["email"] is None and lead["value"] is None

    async def test_validation_names_the_field(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()

        async def post(body: dict[str, Any]) -> httpx.Response:
            return await client.post("/api/leads", json=body, headers=tenant.headers)

        assert ["body", "name"] in field_errors(await post({}))
        assert ["body", "name"] in field_errors(await post({"name": "   "}))
        assert ["body", "email"] in field_errors(await post({"name": "A", "email": "nope"}))
        assert ["body", "value"] in field_errors(await post({"name": "A", "value": -1}))
        assert ["body", "phone"] in field_errors(await post({"name": "A", "phone": "12"}))
        assert ["body", "tags"] in field_errors(await post({"name": "A", "tags": ["x" * 51]}))
        assert ["body", "stage"] in field_errors(await post({"name": "A", "stage": "limbo"}))
        assert ["body", "assigned_to"] in field_errors(
            await post({"name": "A", "assigned_to": str(uuid.uuid4())})
        )
        assert ["body", "assigned_to"] in field_errors(
            await post({"name": "A", "assigned_to": "not-a-uuid"})
        )
        # nothing was created by the refused requests
        listed = await client.get("/api/leads", headers=tenant.headers)
        assert listed.json()["items"] == []

    async def test_cannot_assign_to_another_accounts_user(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant, other = new_tenant(), new_tenant()
        resp = await client.post(
            "/api/leads", json={"name": "A", "assigned_to": other.user_id}, headers=tenant.headers
        )
        assert ["body", "assigned_to"] in field_errors(resp)

    async def test_assign_to_self_needs_no_lookup(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], fake_auth: FakeAuth
    ) -> None:
        tenant = new_tenant()
        lead = await create(client, tenant, assigned_to=tenant.user_id)
        assert lead["assigned_to"] == tenant.user_id
        assert fake_auth.calls == 0

    async def test_auth_down_answers_503_and_changes_nothing(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], fake_auth: FakeAuth
    ) -> None:
        tenant = new_tenant()
        agent = tenant.add_user()
        fake_auth.mode = "error"
        resp = await client.post(
            "/api/leads", json={"name": "A", "assigned_to": agent}, headers=tenant.headers
        )
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "service_unavailable"
        fake_auth.mode = "ok"
        assert (await client.get("/api/leads", headers=tenant.headers)).json()["items"] == []

    async def test_duplicate_phone_is_409(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant, other = new_tenant(), new_tenant()
        await create(client, tenant, phone="5215512345678")
        resp = await client.post(
            "/api/leads", json={"name": "B", "phone": "+52 1 55 1234 5678"}, headers=tenant.headers
        )
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "lead_phone_taken"
        # the same number in another account is another lead
        await create(client, other, phone="5215512345678")
        # leads without a phone never collide
        await create(client, tenant, name="Sin teléfono 1")
        await create(client, tenant, name="Sin teléfono 2")

    async def test_concurrent_duplicates_one_wins(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()
        results = await asyncio.gather(
            *(
                client.post(
                    "/api/leads",
                    json={"name": f"Lead {i}", "phone": "5491122334455"},
                    headers=tenant.headers,
                )
                for i in range(2)
            )
        )
        assert sorted(r.status_code for r in results) == [201, 409]
        listed = await client.get("/api/leads", headers=tenant.headers)
        assert len(listed.json()["items"]) == 1


class TestGetLead:
    async def test_requires_a_token(self, client: httpx.AsyncClient) -> None:
        resp = await client.get(f"/api/leads/{uuid.uuid4()}")
        assert resp.status_code == 401

    async def test_other_account_is_404(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant, other = new_tenant(), new_tenant()
        lead = await create(client, tenant)
        resp = await client.get(f"/api/leads/{lead['id']}", headers=other.headers)
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "lead_not_found"

    async def test_unknown_and_malformed_ids_are_404(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()
        for lead_id in (str(uuid.uuid4()), "nope"):
            resp = await client.get(f"/api/leads/{lead_id}", headers=tenant.headers)
            assert resp.status_code == 404

    async def test_happy_path(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()
        lead = await create(client, tenant, company="Acme")
        resp = await client.get(f"/api/leads/{lead['id']}", headers=tenant.headers)
        assert resp.status_code == 200
        assert resp.json() == lead


class TestUpdateLead:
    async def test_requires_a_token(self, client: httpx.AsyncClient) -> None:
        resp = await client.put(f"/api/leads/{uuid.uuid4()}", json={"name": "X"})
        assert resp.status_code == 401

    async def test_other_account_is_404(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant, other = new_tenant(), new_tenant()
        lead = await create(client, tenant)
        resp = await client.put(
            f"/api/leads/{lead['id']}", json={"name": "Hijacked"}, headers=other.headers
        )
        assert resp.status_code == 404
        got = await client.get(f"/api/leads/{lead['id']}", headers=tenant.headers)
        assert got.json()["name"] == lead["name"]

    async def test_partial_update_and_event(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], app_events: AppEventsFeed
    ) -> None:
        tenant = new_tenant()
        agent = tenant.add_user()
        lead = await create(
            client, tenant, phone="5215500000001", email="a@example.com", tags=["vip"], value=10
        )
        events = await app_events(tenant.account_id)
        resp = await client.put(
            f"/api/leads/{lead['id']}",
            json={"stage": "qualified", "assigned_to": agent, "notes": "Quiere demo"},
            headers=tenant.headers,
        )
        assert resp.status_code == 200, resp.text
        updated = resp.json()
        assert updated["stage"] == "qualified"
        assert updated["assigned_to"] == agent
        assert updated["notes"] == "Quiere demo"
        # untouched fields stay
        for key in ("name", "phone", "email", "tags", "value", "created_at", "source"):
            assert updated[key] == lead[key]
        assert datetime.fromisoformat(updated["updated_at"]) > datetime.fromisoformat(
            lead["updated_at"]
        )

        await eventually(lambda: events.of_type("lead_updated"))
        assert events.of_type("lead_updated")[0]["data"]["lead"] == updated

        listed = await client.get("/api/leads?stage=qualified", headers=tenant.headers)
        assert [x["id"] for x in listed.json()["items"]] == [lead["id"]]

    async def test_explicit_null_clears_optional_fields(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()
        lead = await create(
            client,
            tenant,
            phone="5215500000002",
            email="a@example.com",
            company="Acme",
            tags=["vip"],
            notes="n",
            value=5,
            assigned_to=tenant.user_id,
        )
        resp = await client.put(
            f"/api/leads/{lead['id']}",
            json={
                "phone": None,
                "email": None,
                "company": None,
                "tags": None,
                "notes": None,
                "value": None,
                "assigned_to": None,
            },
            headers=tenant.headers,
        )
        assert resp.status_code == 200, resp.text
        cleared = resp.json()
        for key in ("phone", "email", "company", "notes", "value", "assigned_to"):
            assert cleared[key] is None, key
        assert cleared["tags"] == []
        assert cleared["name"] == lead["name"] and cleared["stage"] == lead["stage"]

    async def test_empty_body_changes_nothing(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()
        lead = await create(client, tenant)
        resp = await client.put(f"/api/leads/{lead['id']}", json={}, headers=tenant.headers)
        assert resp.status_code == 200
        assert resp.json() == lead

    async def test_validation_names_the_field(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()
        lead = await create(client, tenant)
        url = f"/api/leads/{lead['id']}"

        async def put(body: dict[str, Any]) -> httpx.Response:
            return await client.put(url, json=body, headers=tenant.headers)

        assert ["body", "name"] in field_errors(await put({"name": None}))
        assert ["body", "name"] in field_errors(await put({"name": ""}))
        assert ["body", "stage"] in field_errors(await put({"stage": None}))
        assert ["body", "stage"] in field_errors(await put({"stage": "limbo"}))
        assert ["body", "email"] in field_errors(await put({"email": "a@"}))
        assert ["body", "value"] in field_errors(await put({"value": -0.01}))
        assert ["body", "assigned_to"] in field_errors(
            await put({"assigned_to": str(uuid.uuid4())})
        )
        got = await client.get(url, headers=tenant.headers)
        assert got.json() == lead

    async def test_phone_taken_is_409(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()
        await create(client, tenant, name="A", phone="5215500000003")
        second = await create(client, tenant, name="B", phone="5215500000004")
        resp = await client.put(
            f"/api/leads/{second['id']}", json={"phone": "5215500000003"}, headers=tenant.headers
        )
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "lead_phone_taken"

    async def test_unchanged_assignee_does_not_ask_auth(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], fake_auth: FakeAuth
    ) -> None:
        tenant = new_tenant()
        agent = tenant.add_user()
        lead = await create(client, tenant, assigned_to=agent)
        fake_auth.mode = "error"  # auth down: saving the same form still works
        resp = await client.put(
            f"/api/leads/{lead['id']}",
            json={"name": "Renamed", "assigned_to": agent},
            headers=tenant.headers,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["assigned_to"] == agent


class TestDeleteLead:
    async def test_requires_a_token(self, client: httpx.AsyncClient) -> None:
        resp = await client.delete(f"/api/leads/{uuid.uuid4()}")
        assert resp.status_code == 401

    async def test_other_account_is_404(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant, other = new_tenant(), new_tenant()
        lead = await create(client, tenant)
        resp = await client.delete(f"/api/leads/{lead['id']}", headers=other.headers)
        assert resp.status_code == 404
        got = await client.get(f"/api/leads/{lead['id']}", headers=tenant.headers)
        assert got.status_code == 200

    async def test_deletes_and_announces(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], app_events: AppEventsFeed
    ) -> None:
        tenant = new_tenant()
        lead = await create(client, tenant, phone="5215500000005")
        events = await app_events(tenant.account_id)
        resp = await client.delete(f"/api/leads/{lead['id']}", headers=tenant.headers)
        assert resp.status_code == 204
        assert resp.content == b""
        assert (
            await client.get(f"/api/leads/{lead['id']}", headers=tenant.headers)
        ).status_code == 404
        again = await client.delete(f"/api/leads/{lead['id']}", headers=tenant.headers)
        assert again.status_code == 404
        await eventually(lambda: events.of_type("lead_deleted"))
        assert events.of_type("lead_deleted")[0]["data"] == {"lead_id": lead["id"]}
        # the phone is free again
        await create(client, tenant, phone="5215500000005")


class TestPipelineStages:
    async def test_requires_a_token(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/api/pipeline/stages")).status_code == 401

    async def test_default_stages_in_order(
        self, client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
    ) -> None:
        tenant = new_tenant()
        results = await asyncio.gather(
            *(client.get("/api/pipeline/stages", headers=tenant.headers) for _ in range(4))
        )
        for resp in results:  # seeding the account at once from several requests is safe
            assert resp.status_code == 200
            assert resp.json() == {
                "items": [
                    {"key": "new", "name": "New", "position": 0},
                    {"key": "contacted", "name": "Contacted", "position": 1},
                    {"key": "qualified", "name": "Qualified", "position": 2},
                    {"key": "proposal", "name": "Proposal", "position": 3},
                    {"key": "won", "name": "Won", "position": 4},
                    {"key": "lost", "name": "Lost", "position": 5},
                ]
            }
