"""/api/auth: register, login, refresh, logout, me."""

from __future__ import annotations

from fastapi import APIRouter, Response

from clarin_auth.deps import AuthCtx
from clarin_auth.sessions import service
from clarin_auth.sessions.schemas import (
    LoginIn,
    Me,
    PasswordChange,
    RefreshIn,
    RegisterIn,
    Session,
)
from clarin_common.auth import CurrentUser

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/register", status_code=201, response_model=Session)
async def register(body: RegisterIn, ctx: AuthCtx) -> Session:
    return await service.register(ctx, body)


@router.post("/login", response_model=Session)
async def login(body: LoginIn, ctx: AuthCtx) -> Session:
    return await service.login(ctx, body)


@router.post("/refresh", response_model=Session)
async def refresh(body: RefreshIn, ctx: AuthCtx) -> Session:
    return await service.refresh(ctx, body.refresh_token)


@router.post("/logout", status_code=204, response_class=Response)
async def logout(body: RefreshIn, ctx: AuthCtx) -> Response:
    await service.logout(ctx, body.refresh_token)
    return Response(status_code=204)


@router.post("/password", status_code=204, response_class=Response)
async def change_password(body: PasswordChange, principal: CurrentUser, ctx: AuthCtx) -> Response:
    await service.change_password(ctx, principal, body)
    return Response(status_code=204)


@router.get("/me", response_model=Me)
async def me(principal: CurrentUser, ctx: AuthCtx) -> Me:
    return await service.me(ctx, principal)
