"""create_service_app: lifespan, health, readiness, metrics, errors, request ids, JWT."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel, Field

from clarin_common.app import (
    DbPool,
    Resources,
    context_dependency,
    create_service_app,
    service_context,
)
from clarin_common.auth import CurrentUser
from clarin_common.db import create_pool, migrate
from clarin_common.errors import Conflict
from clarin_common.settings import CommonSettings
from clarin_devkit.testing import auth_headers, make_token, running_app
from clarin_devkit.testing.plugin import TestServers

MIGRATIONS = Path(__file__).parent / "migrations_sample"


class Thing(BaseModel):
    name: str = Field(min_length=2)
    size: int


def build_app() -> FastAPI:
    router = APIRouter()

    @router.post("/things", status_code=201)
    async def create(thing: Thing, user: CurrentUser, pool: DbPool) -> dict[str, object]:
        row = await pool.fetchrow(
            "INSERT INTO things (account_id, data) VALUES ($1, $2) RETURNING id, data",
            user.account_id,
            thing.model_dump(),
        )
        assert row is not None
        return {"id": str(row["id"]), "data": row["data"]}

    @router.get("/conflict")
    async def conflict() -> None:
        raise Conflict("Email already registered", code="email_taken")

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    settings = CommonSettings(service_name="sample")
    return create_service_app(
        settings,
        title="sample",
        schema="sample",
        migrations_dir=MIGRATIONS,
        use_redis=True,
        routers=[router],
    )


async def test_health_ready_metrics(clean_state: None) -> None:
    app = build_app()
    async with running_app(app) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"postgres": "ok", "nats": "ok", "redis": "ok"}
        await client.get("/healthz")
        metrics = await client.get("/metrics")
        assert "clarin_http_requests_total" in metrics.text


async def test_error_shapes_and_request_id(clean_state: None) -> None:
    app = build_app()
    token = make_token()
    async with running_app(app) as client:
        anon = await client.post("/things", json={"name": "ok", "size": 1})
        assert anon.status_code == 401
        assert anon.json()["error"]["code"] == "unauthorized"
        assert re.fullmatch(r"[0-9a-f]{32}", anon.headers["x-request-id"])  # made here

        bad = await client.post(
            "/things", json={"name": "x", "size": "big"}, headers=auth_headers(token)
        )
        assert bad.status_code == 422
        locs = [d["loc"] for d in bad.json()["error"]["details"]]
        assert ["body", "name"] in locs and ["body", "size"] in locs

        ok = await client.post(
            "/things",
            json={"name": "ok", "size": 3},
            headers={**auth_headers(token), "X-Request-Id": "abc123"},
        )
        assert ok.status_code == 201
        assert ok.json()["data"] == {"name": "ok", "size": 3}
        assert ok.headers["x-request-id"] == "abc123"

        conflict = await client.get("/conflict")
        assert conflict.status_code == 409
        assert conflict.json() == {
            "error": {"code": "email_taken", "message": "Email already registered", "details": None}
        }


@dataclass(frozen=True)
class SampleContext:
    greeting: str
    tables: int


SampleCtx = Annotated[SampleContext, Depends(context_dependency(SampleContext))]


async def test_the_context_lives_between_the_connections_opening_and_closing(
    clean_state: None,
) -> None:
    log: list[str] = []

    @asynccontextmanager
    async def context(res: Resources) -> AsyncIterator[SampleContext]:
        assert res.pool is not None and res.nc is not None and res.nc.is_connected
        tables = await res.pool.fetchval("SELECT count(*) FROM pg_tables")
        log.append("entered")
        yield SampleContext("hola", tables)
        # still open while the context stops what it started
        assert res.nc.is_connected and await res.pool.fetchval("SELECT 1") == 1
        log.append("left")

    router = APIRouter()

    @router.get("/greeting")
    async def greeting(ctx: SampleCtx) -> dict[str, str]:
        return {"greeting": ctx.greeting}

    app = create_service_app(
        CommonSettings(service_name="sample"),
        title="sample",
        schema="sample",
        migrations_dir=MIGRATIONS,
        routers=[router],
        context=context,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        starting = await client.get("/greeting")
        assert starting.status_code == 503
        assert starting.json()["error"]["code"] == "service_unavailable"
        async with app.router.lifespan_context(app):
            assert log == ["entered"]
            assert (await client.get("/greeting")).json() == {"greeting": "hola"}
            assert service_context(app, SampleContext).tables > 0
        assert log == ["entered", "left"]
        assert (await client.get("/greeting")).status_code == 503


async def test_500_hides_internals(clean_state: None) -> None:
    app = build_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            resp = await client.get("/boom")
    assert resp.status_code == 500
    assert "secret" not in resp.text
    assert resp.json()["error"]["code"] == "internal_error"


async def test_expired_and_tampered_tokens(clean_state: None) -> None:
    app = build_app()
    expired = make_token(ttl=timedelta(seconds=-60))
    good = make_token()
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    async with running_app(app) as client:
        for token, code in ((expired, "token_expired"), (tampered, "invalid_token")):
            resp = await client.post(
                "/things", json={"name": "ok", "size": 1}, headers=auth_headers(token)
            )
            assert resp.status_code == 401
            assert resp.json()["error"]["code"] == code


async def test_migrations_are_safe_in_parallel(test_servers: TestServers) -> None:
    dsn = test_servers.database_url
    results = await asyncio.gather(*(migrate(dsn, "parallel_mig", MIGRATIONS) for _ in range(4)))
    # the sample's migration, then the common one (the outbox), once
    assert sorted(results) == [[], [], [], ["0001.create-things", "common-0001.outbox"]]
    pool = await create_pool(dsn, "parallel_mig")
    try:
        assert await pool.fetchval("SELECT count(*) FROM things") == 0
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
        # the JSON codec round-trips
        await pool.execute(
            "INSERT INTO things (account_id, data) VALUES (gen_random_uuid(), $1)", {"a": [1, "é"]}
        )
        assert await pool.fetchval("SELECT data FROM things") == {"a": [1, "é"]}
    finally:
        await pool.close()


def test_settings_refuse_dev_key_outside_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARIN_ENV", "prod")
    with pytest.raises(ValueError, match="CLARIN_JWT_PUBLIC_KEY"):
        CommonSettings()
    monkeypatch.setenv(
        "CLARIN_JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nreal\n-----END PUBLIC KEY-----\n"
    )
    assert CommonSettings().env == "prod"
    monkeypatch.setenv("CLARIN_ENV", "dev")
    monkeypatch.delenv("CLARIN_JWT_PUBLIC_KEY")
    assert CommonSettings().is_local


def test_tokens_signed_with_another_key_or_no_algorithm_are_refused() -> None:
    import base64
    import json

    from clarin_common.auth import TokenVerifier, generate_key_pair, issue_access_token
    from clarin_common.errors import Unauthorized
    from clarin_common.settings import DEV_JWT_PUBLIC_KEY

    verifier = TokenVerifier(DEV_JWT_PUBLIC_KEY)
    other, _ = generate_key_pair()
    forged, _ = issue_access_token(
        other, user_id="u", account_id="a", role="admin", ttl=timedelta(minutes=5)
    )
    with pytest.raises(Unauthorized):
        verifier.verify(forged)

    good = make_token(account_id="acc")
    header, payload, _sig = good.split(".")

    def b64(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    for alg in ("none", "HS256"):
        unsigned = f"{b64({'alg': alg, 'typ': 'JWT'})}.{payload}."
        with pytest.raises(Unauthorized):
            verifier.verify(unsigned)
    assert verifier.verify(good).account_id == "acc"
    assert header  # a real token has the three parts


def test_settings_read_dotenv_under_both_prefixes_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic_settings import SettingsConfigDict

    class ThingSettings(CommonSettings):
        model_config = SettingsConfigDict(env_prefix="THING_", env_file=".env", extra="ignore")
        port: int = 1

    for name in ("CLARIN_ENV_FILE", "CLARIN_JWT_ISSUER", "THING_PORT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("CLARIN_JWT_ISSUER=from-dotenv\nTHING_PORT=7\n")
    (tmp_path / "other.env").write_text("CLARIN_JWT_ISSUER=from-other\nTHING_PORT=8\n")
    monkeypatch.chdir(tmp_path)
    read = ThingSettings()
    assert (read.jwt_issuer, read.port) == ("from-dotenv", 7)
    # a caller that says every value itself (benchmarks) reads no .env at all
    explicit = ThingSettings(_env_file=None)
    assert (explicit.jwt_issuer, explicit.port) == ("clarin", 1)
    # CLARIN_ENV_FILE names another file, or none (what the test plugin sets)
    monkeypatch.setenv("CLARIN_ENV_FILE", str(tmp_path / "other.env"))
    other = ThingSettings()
    assert (other.jwt_issuer, other.port) == ("from-other", 8)
    monkeypatch.setenv("CLARIN_ENV_FILE", "")
    none = ThingSettings()
    assert (none.jwt_issuer, none.port) == ("clarin", 1)


def test_a_test_run_reads_no_dotenv() -> None:
    # set by the plugin for the whole run (and inherited by the processes tests start)
    assert os.environ.get("CLARIN_ENV_FILE") == ""


async def test_nul_in_text_is_a_422_not_a_500(test_servers: TestServers) -> None:
    """PostgreSQL text cannot hold NUL: found by schemathesis as a 500 on POST /api/devices."""
    import asyncpg
    from fastapi import FastAPI

    from clarin_common.errors import install_error_handlers
    from clarin_devkit.testing import running_app

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/echo")
    async def echo(body: dict[str, str]) -> dict[str, str]:
        conn = await asyncpg.connect(test_servers.database_url)
        try:
            value = await conn.fetchval("SELECT $1::text", body["text"])
        finally:
            await conn.close()
        return {"text": value}

    async with running_app(app) as client:
        ok = await client.post("/echo", json={"text": "hola"})
        assert ok.json() == {"text": "hola"}
        bad = await client.post("/echo", json={"text": "a\u0000b"})
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "validation_error"


async def test_a_database_out_of_connections_is_a_503_not_a_500(test_servers: TestServers) -> None:
    """Found by the soak: POST /api/messages/send answered 500 when PostgreSQL had no
    connection left; docs/API.md promises 503 for a dependency that is unavailable."""
    import asyncpg
    from fastapi import FastAPI

    from clarin_common.errors import install_error_handlers
    from clarin_devkit.testing import running_app

    role = f"no_conn_{os.getpid()}"
    admin = await asyncpg.connect(test_servers.database_url)
    await admin.execute(f"DROP ROLE IF EXISTS {role}")
    await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    refused_url = re.sub(r"//[^@/]*@", f"//{role}@", test_servers.database_url, count=1)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/count")
    async def count(url: str) -> dict[str, int]:
        conn = await asyncpg.connect(url)
        try:
            return {"n": await conn.fetchval("SELECT 1")}
        finally:
            await conn.close()

    try:
        async with running_app(app) as client:
            ok = await client.get("/count", params={"url": test_servers.database_url})
            assert ok.json() == {"n": 1}
            refused = await client.get("/count", params={"url": refused_url})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "service_unavailable"
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
