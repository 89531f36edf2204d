"""The auth service: accounts, users and sessions (port 8001)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from clarin_auth.deps import AuthContext
from clarin_auth.security import PasswordHasher, TokenFactory
from clarin_auth.sessions.endpoints import router as sessions_router
from clarin_auth.settings import AuthSettings
from clarin_auth.users.endpoints import router as users_router
from clarin_common.app import Resources, create_service_app, serve
from clarin_common.auth import TokenVerifier
from clarin_common.outbox import Outbox

MIGRATIONS_DIR = Path(__file__).parents[2] / "migrations"


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or AuthSettings()
    tokens = TokenFactory(
        settings.jwt_private_key,
        access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
        session_max_age=timedelta(seconds=settings.session_max_age_seconds),
        issuer=settings.jwt_issuer,
    )

    @asynccontextmanager
    async def context(res: Resources) -> AsyncIterator[AuthContext]:
        assert res.pool is not None and res.js is not None
        tokens.check_verifies_with(TokenVerifier(settings.jwt_public_key, settings.jwt_issuer))
        passwords = await PasswordHasher.create(settings.bcrypt_rounds)
        async with Outbox(res.pool, res.js, settings.outbox_relay_interval, "auth") as outbox:
            yield AuthContext(settings, res.pool, passwords, tokens, outbox)

    return create_service_app(
        settings,
        title="Clarin auth",
        schema="auth",
        migrations_dir=MIGRATIONS_DIR,
        # session revocations go to the gateways over NATS (stream AUTH_EVENTS)
        use_nats=True,
        routers=[sessions_router, users_router],
        context=context,
    )


def run() -> None:
    settings = AuthSettings()
    serve(create_app(settings), settings.host, settings.port)
