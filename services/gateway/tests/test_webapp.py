"""The web app: static files, single-page fallback, and what never falls back."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.gateway.tests.helpers import Gateway, GatewayFactory

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>Clarin app</title>")
    (root / "assets" / "app-123.js").write_text("console.log('hi')")
    (root / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("do not serve")
    return root


async def test_serves_files_with_cache_headers(gateway_factory: GatewayFactory, dist: Path) -> None:
    async with gateway_factory(static_dir=str(dist)) as gw:
        index = await gw.client.get("/")
        assert index.status_code == 200
        assert "Clarin app" in index.text
        assert index.headers["cache-control"] == "no-cache"

        asset = await gw.client.get("/assets/app-123.js")
        assert asset.status_code == 200
        assert asset.text == "console.log('hi')"
        assert "immutable" in asset.headers["cache-control"]
        assert "max-age=31536000" in asset.headers["cache-control"]

        icon = await gw.client.get("/favicon.svg")
        assert icon.status_code == 200
        assert icon.headers["content-type"].startswith("image/svg")


async def test_app_routes_fall_back_to_index(gateway_factory: GatewayFactory, dist: Path) -> None:
    async with gateway_factory(static_dir=str(dist)) as gw:
        for path in ("/inbox", "/leads/123", "/devices/new"):
            resp = await gw.client.get(path, headers=HTML)
            assert resp.status_code == 200, path
            assert "Clarin app" in resp.text
            assert resp.headers["cache-control"] == "no-cache"
        # not a page request, or a missing asset: 404, not the app
        assert (
            await gw.client.get("/inbox", headers={"Accept": "application/json"})
        ).status_code == 404
        assert (await gw.client.get("/assets/gone.js", headers=HTML)).status_code == 404


async def test_api_and_ws_never_fall_back(gateway_factory: GatewayFactory, dist: Path) -> None:
    async with gateway_factory(static_dir=str(dist)) as gw:
        for path in ("/api/unknown", "/api", "/ws", "/ws/x"):
            resp = await gw.client.get(path, headers=HTML)
            assert resp.status_code in (401, 404), path
            assert resp.headers["content-type"] == "application/json", path
            assert "error" in resp.json()
        assert (await gw.client.get("/healthz", headers=HTML)).json() == {"status": "ok"}


async def test_fastapi_own_docs_are_not_served(gateway_factory: GatewayFactory, dist: Path) -> None:
    async with gateway_factory(static_dir=str(dist)) as gw:
        # the gateway's own schema would describe nothing useful: the merged one is at /api
        assert (await gw.client.get("/openapi.json")).status_code == 404
        docs = await gw.client.get("/docs", headers=HTML)
        assert "Clarin app" in docs.text


async def test_no_escape_from_the_static_dir(gateway_factory: GatewayFactory, dist: Path) -> None:
    async with gateway_factory(static_dir=str(dist)) as gw:
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/..%2F..%2Fsecret.txt"):
            resp = await gw.client.get(path)
            assert "do not serve" not in resp.text, path


async def test_missing_web_app_explains_itself(gateway: Gateway) -> None:
    resp = await gateway.client.get("/", headers=HTML)
    assert resp.status_code == 503
    assert "not built" in resp.text
    inbox = await gateway.client.get("/inbox", headers=HTML)
    assert "not built" in inbox.text
    # the API keeps working
    assert (await gateway.client.get("/api/openapi.json")).status_code == 200
