"""Rules for the users of an account."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import asyncpg

from clarin_auth.exceptions import EmailTaken
from clarin_auth.security import PasswordHasher
from clarin_auth.users import repository
from clarin_auth.users.schemas import UserCreate
from clarin_common.auth import Principal
from clarin_common.contract import User

T = TypeVar("T")


async def unique_email(write: Awaitable[T]) -> T:
    """Run a write that inserts a user; a taken email becomes ``EmailTaken``."""
    try:
        return await write
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "users_email_key":
            raise EmailTaken() from exc
        raise


async def list_users(pool: asyncpg.Pool, principal: Principal) -> list[User]:
    return await repository.list_for_account(pool, principal.account_id)


async def create_user(
    pool: asyncpg.Pool, passwords: PasswordHasher, principal: Principal, data: UserCreate
) -> User:
    """A new user in the caller's account (the caller is an admin)."""
    password_hash = await passwords.hash(data.password)
    return await unique_email(
        repository.create_user(
            pool,
            account_id=principal.account_id,
            email=data.email,
            name=data.name,
            role=data.role,
            password_hash=password_hash,
        )
    )
