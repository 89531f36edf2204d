"""/api/users: the users of the caller's account."""

from __future__ import annotations

from fastapi import APIRouter

from clarin_auth.deps import SecurityDep
from clarin_auth.users import service
from clarin_auth.users.schemas import UserCreate, UserList
from clarin_common.app import DbPool
from clarin_common.auth import AdminUser, CurrentUser
from clarin_common.contract import User

router = APIRouter(prefix="/api/users", tags=["users"])


@router.get("", response_model=UserList)
async def list_users(principal: CurrentUser, pool: DbPool) -> UserList:
    return UserList(items=await service.list_users(pool, principal))


@router.post("", status_code=201, response_model=User)
async def create_user(
    body: UserCreate, principal: AdminUser, pool: DbPool, security: SecurityDep
) -> User:
    return await service.create_user(pool, security.passwords, principal, body)
