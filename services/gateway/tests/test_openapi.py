"""The merged OpenAPI document and the docs page."""

from __future__ import annotations

from clarin_gateway.openapi import merge_documents
from services.gateway.tests.helpers import Gateway, GatewayFactory, Upstream


async def test_merged_document_has_every_service_paths(
    gateway: Gateway, upstreams: dict[str, Upstream]
) -> None:
    resp = await gateway.client.get("/api/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    paths = doc["paths"]
    assert "/api/auth/login" in paths  # auth
    assert "/api/users" in paths  # auth
    assert "/api/leads/typed" in paths  # leads
    assert "/api/media/upload" in paths  # messaging
    assert not [p for p in paths if not p.startswith("/api/")]
    assert "x-unavailable-services" not in doc

    schemas = doc["components"]["schemas"]
    # same name, different shapes: both kept, the second one renamed and referenced
    names = {name for name in schemas if name.endswith("Thing")}
    assert len(names) == 2
    auth_thing = next(n for n in names if "auth_field" in schemas[n]["properties"])
    leads_thing = next(n for n in names if "leads_field" in schemas[n]["properties"])
    holder = next(n for n in schemas if n.endswith("Holder"))
    assert schemas[holder]["properties"]["thing"]["$ref"] == f"#/components/schemas/{leads_thing}"
    body = paths["/api/users"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"] == f"#/components/schemas/{auth_thing}"
    # identical schemas are merged into one
    assert "Shared" in schemas and not [n for n in schemas if n.endswith("__Shared")]

    # cached: a second read does not ask the services again
    fetches = upstreams["auth"].openapi_fetches
    assert fetches == 1
    await gateway.client.get("/api/openapi.json")
    assert upstreams["auth"].openapi_fetches == fetches


async def test_a_service_that_is_down_is_left_out(
    gateway_factory: GatewayFactory, dead_url: str
) -> None:
    async with gateway_factory(leads_url=dead_url) as gw:
        resp = await gw.client.get("/api/openapi.json")
        assert resp.status_code == 200
        doc = resp.json()
        assert doc["x-unavailable-services"] == ["leads"]
        assert "/api/auth/login" in doc["paths"]
        assert "/api/leads/typed" not in doc["paths"]


async def test_docs_page_lists_the_operations(gateway: Gateway) -> None:
    resp = await gateway.client.get("/api/docs")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "/api/auth/login" in resp.text
    assert "/api/media/upload" in resp.text
    assert 'href="/api/openapi.json"' in resp.text


def test_merge_rewrites_refs_in_responses_and_keeps_tags() -> None:
    a = {
        "paths": {"/api/a": {"get": {"responses": {"200": {"$ref": "#/components/schemas/X"}}}}},
        "components": {"schemas": {"X": {"type": "string"}}},
    }
    b = {
        "paths": {
            "/api/b": {
                "get": {
                    "tags": ["bee"],
                    "responses": {"200": {"$ref": "#/components/schemas/X"}},
                }
            },
            "/healthz": {"get": {}},
        },
        "components": {"schemas": {"X": {"type": "integer"}}},
    }
    merged = merge_documents({"a": a, "b": b}, [])
    assert merged["components"]["schemas"]["X"] == {"type": "string"}
    assert merged["components"]["schemas"]["b__X"] == {"type": "integer"}
    assert merged["paths"]["/api/b"]["get"]["responses"]["200"]["$ref"].endswith("/b__X")
    assert merged["paths"]["/api/a"]["get"]["responses"]["200"]["$ref"].endswith("/X")
    assert merged["paths"]["/api/a"]["get"]["tags"] == ["a"]
    assert merged["paths"]["/api/b"]["get"]["tags"] == ["bee"]
    assert "/healthz" not in merged["paths"]
