"""/api/users: the users of the caller's account."""

from __future__ import annotations

from fastapi import APIRouter, Response

from clarin_auth.deps import AuthCtx
from clarin_auth.users import service
from clarin_auth.users.schemas import UserCreate, UserList, UserUpdate
from clarin_common.auth import AdminUser, CurrentUser
from clarin_common.contract import User

router = APIRouter(prefix="/api/users", tags=["users"])


@router.get("", response_model=UserList)
async def list_users(principal: CurrentUser, ctx: AuthCtx) -> UserList:
    return UserList(items=await service.list_users(ctx, principal))


@router.post("", status_code=201, response_model=User)
async def create_user(body: UserCreate, principal: AdminUser, ctx: AuthCtx) -> User:
    return await service.create_user(ctx, principal, body)


@router.patch("/{user_id}", response_model=User)
async def update_user(user_id: str, body: UserUpdate, principal: AdminUser, ctx: AuthCtx) -> User:
    return await service.update_user(ctx, principal, user_id, body)


@router.delete("/{user_id}", status_code=204, response_class=Response)
async def delete_user(user_id: str, principal: AdminUser, ctx: AuthCtx) -> Response:
    await service.delete_user(ctx, principal, user_id)
    return Response(status_code=204)
