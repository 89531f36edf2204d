"""Rules for the users of an account."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg

from clarin_auth.deps import AuthContext
from clarin_auth.revocations import Revocation, stage_revocations
from clarin_auth.sessions import repository as tokens
from clarin_auth.users import repository
from clarin_auth.users.exceptions import CannotRemoveSelf, EmailTaken, LastAdmin, UserNotFound
from clarin_auth.users.schemas import UserCreate, UserUpdate
from clarin_common.auth import Principal
from clarin_common.contract import User
from clarin_common.db import transaction

T = TypeVar("T")


async def unique_email(write: Awaitable[T]) -> T:
    """Run a write that inserts a user; a taken email becomes ``EmailTaken``."""
    try:
        return await write
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "users_email_key":
            raise EmailTaken() from exc
        raise


async def list_users(ctx: AuthContext, principal: Principal) -> list[User]:
    return await repository.list_for_account(ctx.pool, principal.account_id)


async def create_user(ctx: AuthContext, principal: Principal, data: UserCreate) -> User:
    """A new user in the caller's account (the caller is an admin)."""
    password_hash = await ctx.passwords.hash(data.password)
    return await unique_email(
        repository.create_user(
            ctx.pool,
            account_id=principal.account_id,
            email=data.email,
            name=data.name,
            role=data.role,
            password_hash=password_hash,
        )
    )


def _check_id(user_id: str) -> None:
    """A malformed id names no user: 404 like an unknown one."""
    try:
        uuid.UUID(user_id)
    except ValueError:
        raise UserNotFound() from None


async def update_user(
    ctx: AuthContext, principal: Principal, user_id: str, data: UserUpdate
) -> User:
    """Rename, change the role of, disable or enable a user of the caller's account.

    The account keeps at least one active admin (409 ``last_admin``); an admin
    cannot disable themself (409 ``cannot_remove_self``). Disabling ends every
    session of the user; a role change ends their access tokens (the next
    refresh carries the new role).
    """
    _check_id(user_id)
    if data.disabled and user_id == principal.user_id:
        raise CannotRemoveSelf("You cannot disable yourself")
    async with transaction(ctx.pool) as conn:
        await repository.lock_account_users(conn, principal.account_id)
        before = await repository.get_by_id_for_account(conn, user_id, principal.account_id)
        if before is None:
            raise UserNotFound()
        after = await repository.update_for_account(
            conn,
            user_id,
            principal.account_id,
            name=data.name,
            role=data.role,
            disabled=data.disabled,
        )
        assert after is not None  # locked above, same transaction
        was_admin = before.role == "admin" and not before.disabled
        is_admin = after.role == "admin" and not after.disabled
        if (
            was_admin
            and not is_admin
            and await repository.count_active_admins(conn, principal.account_id) == 0
        ):
            raise LastAdmin()
        ended: list[Revocation] = []
        if after.disabled and not before.disabled:
            await tokens.revoke_user_families(conn, user_id)
            ended.append(
                Revocation(account_id=after.account_id, user_id=after.id, reason="disabled")
            )
        elif after.role != before.role and not after.disabled:
            ended.append(
                Revocation(account_id=after.account_id, user_id=after.id, reason="role_changed")
            )
        announced = await stage_revocations(conn, ended)
    await ctx.outbox.publish(announced)
    return after


async def delete_user(ctx: AuthContext, principal: Principal, user_id: str) -> None:
    """Remove a user of the caller's account (their sessions go with them)."""
    _check_id(user_id)
    if user_id == principal.user_id:
        raise CannotRemoveSelf()
    async with transaction(ctx.pool) as conn:
        await repository.lock_account_users(conn, principal.account_id)
        user = await repository.get_by_id_for_account(conn, user_id, principal.account_id)
        if user is None:
            raise UserNotFound()
        await repository.delete_for_account(conn, user_id, principal.account_id)
        if (
            user.role == "admin"
            and not user.disabled
            and await repository.count_active_admins(conn, principal.account_id) == 0
        ):
            raise LastAdmin()
        announced = await stage_revocations(
            conn, [Revocation(account_id=user.account_id, user_id=user.id, reason="removed")]
        )
    await ctx.outbox.publish(announced)
