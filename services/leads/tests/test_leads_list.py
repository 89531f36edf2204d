"""GET /api/leads: filters and cursor pages (newest first, ties on created_at)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from clarin_devkit.testing.plugin import TestServers
from services.leads.tests.helpers import Tenant


async def create(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/leads", json=body, headers=tenant.headers)
    assert resp.status_code == 201, resp.text
    lead: dict[str, Any] = resp.json()
    return lead


async def ids(client: httpx.AsyncClient, tenant: Tenant, query: str) -> list[str]:
    resp = await client.get(f"/api/leads{query}", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    return [lead["id"] for lead in resp.json()["items"]]


async def test_requires_a_token(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/leads")
    assert resp.status_code == 401


async def test_lists_only_own_account_newest_first(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
) -> None:
    tenant, other = new_tenant(), new_tenant()
    first = await create(client, tenant, name="Primero")
    second = await create(client, tenant, name="Segundo")
    await create(client, other, name="Ajeno")
    resp = await client.get("/api/leads", headers=tenant.headers)
    assert resp.json() == {"items": [second, first], "next_cursor": None}


async def test_filters(client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]) -> None:
    tenant = new_tenant()
    agent = tenant.add_user()
    ana = await create(
        client,
        tenant,
        name="Ana López",
        phone="+52 1 55 1234 5678",
        email="ana@acme.mx",
        tags=["VIP", "norte"],
        stage="qualified",
        assigned_to=agent,
    )
    beto = await create(
        client, tenant, name="Beto", company="Tacos 100%_Real", tags=["sur"], stage="won"
    )
    carla = await create(
        client, tenant, name="Carla", email="carla@example.com", tags=["vip"], assigned_to=agent
    )

    assert await ids(client, tenant, "?stage=qualified") == [ana["id"]]
    assert await ids(client, tenant, "?stage=new") == [carla["id"]]
    assert await ids(client, tenant, "?stage=lost") == []
    # tags match whatever their case
    assert await ids(client, tenant, "?tag=vip") == [carla["id"], ana["id"]]
    assert await ids(client, tenant, "?tag=sur") == [beto["id"]]
    # q: name, phone (also written with separators), email, company
    assert await ids(client, tenant, "?q=l%C3%B3pez") == [ana["id"]]
    assert await ids(client, tenant, "?q=1234") == [ana["id"]]
    assert await ids(client, tenant, "?q=%2B52%2055%201234") == []  # digits 525512 34: no match
    assert await ids(client, tenant, "?q=55%201234%205678") == [ana["id"]]
    assert await ids(client, tenant, "?q=EXAMPLE.com") == [carla["id"]]
    assert await ids(client, tenant, "?q=tacos") == [beto["id"]]
    # % and _ are literal characters, not wildcards
    assert await ids(client, tenant, "?q=100%25_") == [beto["id"]]
    assert await ids(client, tenant, "?q=%25") == [beto["id"]]
    assert await ids(client, tenant, "?q=_") == [beto["id"]]
    assert await ids(client, tenant, "?assigned_to=" + agent) == [carla["id"], ana["id"]]
    assert await ids(client, tenant, "?assigned_to=" + tenant.user_id) == []
    # combined
    assert await ids(client, tenant, f"?tag=vip&stage=new&assigned_to={agent}") == [carla["id"]]
    assert await ids(client, tenant, "?tag=vip&q=ana") == [ana["id"]]


async def test_filter_validation(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
) -> None:
    tenant, other = new_tenant(), new_tenant()
    cases = {
        "?stage=limbo": ["query", "stage"],
        f"?assigned_to={uuid.uuid4()}": ["query", "assigned_to"],
        f"?assigned_to={other.user_id}": ["query", "assigned_to"],
        "?limit=0": ["query", "limit"],
        "?limit=201": ["query", "limit"],
        "?cursor=garbage": ["query", "cursor"],
    }
    for query, loc in cases.items():
        resp = await client.get(f"/api/leads{query}", headers=tenant.headers)
        assert resp.status_code == 422, query
        assert loc in [d["loc"] for d in resp.json()["error"]["details"]], query


async def test_pages_walk_every_lead_once_with_ties(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], test_servers: TestServers
) -> None:
    tenant, other = new_tenant(), new_tenant()
    made = [await create(client, tenant, name=f"Lead {i}") for i in range(7)]
    await create(client, other, name="Ajeno")
    # leads created in one batch share created_at: give 5 of them the same instant
    conn = await asyncpg.connect(test_servers.database_url)
    try:
        same = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
        await conn.execute(
            "UPDATE leads.leads SET created_at = $1 WHERE id = ANY($2::uuid[])",
            same,
            [lead["id"] for lead in made[1:6]],
        )
    finally:
        await conn.close()

    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        resp = await client.get(f"/api/leads{query}", headers=tenant.headers)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert len(page["items"]) <= 2
        seen.extend(page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4
    assert sorted(x["id"] for x in seen) == sorted(x["id"] for x in made)
    keys = [(datetime.fromisoformat(x["created_at"]), uuid.UUID(x["id"])) for x in seen]
    assert keys == sorted(keys, reverse=True)


async def test_exact_page_has_no_next_cursor(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
) -> None:
    tenant = new_tenant()
    for i in range(2):
        await create(client, tenant, name=f"Lead {i}")
    page = (await client.get("/api/leads?limit=2", headers=tenant.headers)).json()
    assert len(page["items"]) == 2
    assert page["next_cursor"] is None


async def test_filters_apply_across_pages(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
) -> None:
    tenant = new_tenant()
    tagged = []
    for i in range(5):
        lead = await create(client, tenant, name=f"Lead {i}", tags=["hot"] if i % 2 else [])
        if i % 2:
            tagged.append(lead["id"])
    page1 = (await client.get("/api/leads?tag=hot&limit=1", headers=tenant.headers)).json()
    page2 = (
        await client.get(
            f"/api/leads?tag=hot&limit=1&cursor={page1['next_cursor']}", headers=tenant.headers
        )
    ).json()
    assert [page1["items"][0]["id"], page2["items"][0]["id"]] == tagged[::-1]
    assert page2["next_cursor"] is None
