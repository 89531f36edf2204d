"""/api/auth: register, login, refresh, logout, me."""

from __future__ import annotations

from fastapi import APIRouter, Response

from clarin_auth.deps import SecurityDep
from clarin_auth.sessions import service
from clarin_auth.sessions.schemas import (
    LoginIn,
    Me,
    PasswordChange,
    RefreshIn,
    RegisterIn,
    Session,
)
from clarin_common.app import DbPool
from clarin_common.auth import CurrentUser

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/register", status_code=201, response_model=Session)
async def register(body: RegisterIn, pool: DbPool, security: SecurityDep) -> Session:
    return await service.register(pool, security, body)


@router.post("/login", response_model=Session)
async def login(body: LoginIn, pool: DbPool, security: SecurityDep) -> Session:
    return await service.login(pool, security, body)


@router.post("/refresh", response_model=Session)
async def refresh(body: RefreshIn, pool: DbPool, security: SecurityDep) -> Session:
    return await service.refresh(pool, security, security.revocations, body.refresh_token)


@router.post("/logout", status_code=204, response_class=Response)
async def logout(body: RefreshIn, pool: DbPool, security: SecurityDep) -> Response:
    await service.logout(pool, security.revocations, body.refresh_token)
    return Response(status_code=204)


@router.post("/password", status_code=204, response_class=Response)
async def change_password(
    body: PasswordChange, principal: CurrentUser, pool: DbPool, security: SecurityDep
) -> Response:
    await service.change_password(pool, security, security.revocations, principal, body)
    return Response(status_code=204)


@router.get("/me", response_model=Me)
async def me(principal: CurrentUser, pool: DbPool) -> Me:
    return await service.me(pool, principal)
