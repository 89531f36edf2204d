"""Settings, startup checks and health of the auth service."""

from __future__ import annotations

import httpx
import pytest

from clarin_auth.main import create_app
from clarin_auth.settings import AuthSettings
from clarin_common.auth import generate_key_pair
from clarin_common.settings import DEV_JWT_PRIVATE_KEY, DEV_JWT_PUBLIC_KEY
from clarin_devkit.testing import running_app
from clarin_devkit.testing.plugin import TestServers


def test_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AUTH_PORT", "CLARIN_HOST", "AUTH_BCRYPT_ROUNDS", "AUTH_JWT_PRIVATE_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = AuthSettings()
    assert settings.port == 8001
    assert settings.service_name == "auth"
    assert settings.access_token_ttl_seconds == 900
    assert settings.refresh_token_ttl_seconds == 30 * 24 * 3600
    assert settings.bcrypt_rounds == 12
    assert settings.jwt_private_key == DEV_JWT_PRIVATE_KEY

    monkeypatch.setenv("AUTH_PORT", "9001")
    monkeypatch.setenv("CLARIN_HOST", "0.0.0.0")
    monkeypatch.setenv("AUTH_BCRYPT_ROUNDS", "5")
    monkeypatch.setenv("AUTH_ACCESS_TOKEN_TTL_SECONDS", "60")
    settings = AuthSettings()
    assert (settings.port, settings.host, settings.bcrypt_rounds) == (9001, "0.0.0.0", 5)
    assert settings.access_token_ttl_seconds == 60


def test_dev_private_key_is_refused_outside_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = generate_key_pair()
    monkeypatch.setenv("CLARIN_ENV", "prod")
    monkeypatch.setenv("CLARIN_JWT_PUBLIC_KEY", public)
    monkeypatch.delenv("AUTH_JWT_PRIVATE_KEY", raising=False)
    with pytest.raises(ValueError, match="AUTH_JWT_PRIVATE_KEY"):
        AuthSettings()
    monkeypatch.setenv("AUTH_JWT_PRIVATE_KEY", private)
    assert AuthSettings().jwt_private_key == private
    monkeypatch.setenv("CLARIN_ENV", "test")
    monkeypatch.delenv("AUTH_JWT_PRIVATE_KEY")
    monkeypatch.setenv("CLARIN_JWT_PUBLIC_KEY", DEV_JWT_PUBLIC_KEY)
    assert AuthSettings().is_local


async def test_startup_refuses_a_key_that_does_not_match_the_public_key(
    test_servers: TestServers,
) -> None:
    private, _ = generate_key_pair()
    app = create_app(AuthSettings(bcrypt_rounds=4, jwt_private_key=private))
    with pytest.raises(RuntimeError, match="AUTH_JWT_PRIVATE_KEY does not match"):
        async with running_app(app):
            pass


async def test_a_real_key_pair_signs_sessions(
    test_servers: TestServers, clean_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    private, public = generate_key_pair()
    monkeypatch.setenv("CLARIN_JWT_PUBLIC_KEY", public)
    app = create_app(AuthSettings(bcrypt_rounds=4, jwt_private_key=private))
    async with running_app(app) as client:
        resp = await client.post(
            "/api/auth/register",
            json={
                "account_name": "Acme",
                "name": "Alice",
                "email": "alice@example.com",
                "password": "long enough",
            },
        )
        assert resp.status_code == 201, resp.text
        me = await client.get(
            "/api/auth/me", headers={"Authorization": f"Bearer {resp.json()['access_token']}"}
        )
        assert me.status_code == 200


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    # NATS carries the session revocations to the gateways
    assert ready.json()["checks"] == {"postgres": "ok", "nats": "ok"}
    assert "clarin_http_requests_total" in (await client.get("/metrics")).text


async def test_openapi_lists_the_public_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/auth/me",
        "/api/users",
    } <= set(paths)
