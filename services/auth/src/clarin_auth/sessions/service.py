"""Rules for signing in: register, login, refresh (rotation with reuse detection), logout."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from clarin_auth.deps import AuthContext
from clarin_auth.revocations import Revocation, stage_revocations
from clarin_auth.security import hash_refresh_token
from clarin_auth.sessions import repository as tokens
from clarin_auth.sessions.exceptions import (
    InvalidRefreshToken,
    RefreshTokenReused,
    UserDisabled,
    WrongPassword,
)
from clarin_auth.sessions.schemas import LoginIn, Me, PasswordChange, RegisterIn, Session
from clarin_auth.users import repository as users
from clarin_auth.users.service import unique_email
from clarin_common.auth import Principal
from clarin_common.contract import Account, User
from clarin_common.db import transaction
from clarin_common.errors import InvalidCredentials, Unauthorized
from clarin_common.outbox import PendingEvent


@dataclass(frozen=True)
class Family:
    """The refresh-token family a session continues; None for a new one."""

    id: str
    expires_at: datetime


async def _start_session(
    conn: asyncpg.Connection,
    ctx: AuthContext,
    user: User,
    account: Account,
    family: Family | None = None,
) -> Session:
    """Sign an access token and store the next refresh token (of a new family if none).

    A new family ends ``session_max_age`` from now whatever happens; each of its
    refresh tokens lives ``refresh_ttl`` at most, and never past the family's end.
    """
    now = datetime.now(UTC)
    if family is None:
        family = Family(id=str(uuid.uuid4()), expires_at=now + ctx.tokens.session_max_age)
    refresh_token, token_hash = ctx.tokens.refresh_token()
    await tokens.insert(
        conn,
        user_id=user.id,
        account_id=account.id,
        family_id=family.id,
        token_hash=token_hash,
        expires_at=now + ctx.tokens.refresh_ttl,
        family_expires_at=family.expires_at,
    )
    access = ctx.tokens.access_token(user, session_id=family.id)
    return Session(
        access_token=access.token,
        refresh_token=refresh_token,
        expires_in=access.expires_in,
        user=user,
        account=account,
    )


async def register(ctx: AuthContext, data: RegisterIn) -> Session:
    """A new account with its first user, an admin, signed in."""
    password_hash = await ctx.passwords.hash(data.password)
    async with transaction(ctx.pool) as conn:
        account = await users.create_account(conn, data.account_name)
        user = await unique_email(
            users.create_user(
                conn,
                account_id=account.id,
                email=data.email,
                name=data.name,
                role="admin",
                password_hash=password_hash,
            )
        )
        return await _start_session(conn, ctx, user, account)


async def login(ctx: AuthContext, data: LoginIn) -> Session:
    found = await users.get_by_email_with_password(ctx.pool, data.email)
    # Always run bcrypt (against a dummy hash for an unknown email): the answer
    # takes as long whether or not the email exists.
    matches = await ctx.passwords.verify(
        data.password, found.password_hash if found is not None else None
    )
    if found is None or not matches:
        raise InvalidCredentials()
    if found.user.disabled:
        # only told to whoever knows the password
        raise UserDisabled()
    async with transaction(ctx.pool) as conn:
        account = await users.get_account(conn, found.user.account_id)
        if account is None:  # pragma: no cover - a user always has its account (FK)
            raise InvalidCredentials()
        await tokens.delete_expired_for_user(conn, found.user.id)
        return await _start_session(conn, ctx, found.user, account)


class _Refused(enum.Enum):
    INVALID = "invalid"


async def refresh(ctx: AuthContext, refresh_token: str) -> Session:
    """Spend a refresh token for a new session of the same family.

    A token presented a second time means it leaked (or a client is broken):
    the whole family is revoked, so whoever holds its newest token is signed out too.
    """
    token_hash = hash_refresh_token(refresh_token)
    outcome: Session | _Refused | Revocation
    # The revocation must commit even though the caller gets a 401, so the
    # transaction returns an outcome and the error is raised after it.
    announced: list[PendingEvent] = []
    async with transaction(ctx.pool) as conn:
        outcome = await _refresh_in(conn, ctx, token_hash)
        if isinstance(outcome, Revocation):
            announced = await stage_revocations(conn, [outcome])
    await ctx.outbox.publish(announced)
    if isinstance(outcome, Revocation):
        raise RefreshTokenReused()
    if isinstance(outcome, _Refused):
        raise InvalidRefreshToken()
    return outcome


async def _refresh_in(
    conn: asyncpg.Connection, ctx: AuthContext, token_hash: str
) -> Session | _Refused | Revocation:
    found = await tokens.get_by_hash(conn, token_hash)
    if found is None:
        return _Refused.INVALID
    await tokens.lock_family(conn, found.family_id)
    spent = await tokens.spend(conn, token_hash)
    if spent is None:
        current = await tokens.get_by_hash(conn, token_hash)
        if current is not None and current.used_at is not None:
            await tokens.revoke_family(conn, current.family_id)
            return Revocation(
                account_id=current.account_id,
                user_id=current.user_id,
                reason="refresh_reused",
                session_ids=[current.family_id],
            )
        return _Refused.INVALID  # revoked or expired
    user = await users.get_for_session_for_account(conn, spent.user_id, spent.account_id)
    account = await users.get_account(conn, spent.account_id)
    if user is None or account is None:  # pragma: no cover - tokens cascade with their user
        return _Refused.INVALID
    if user.disabled:  # pragma: no cover - disabling revokes every family first
        await tokens.revoke_family(conn, spent.family_id)
        return _Refused.INVALID
    family = Family(id=spent.family_id, expires_at=spent.family_expires_at)
    return await _start_session(conn, ctx, user, account, family)


async def logout(ctx: AuthContext, refresh_token: str) -> None:
    """Revoke the family of ``refresh_token``; an unknown token is already signed out."""
    token_hash = hash_refresh_token(refresh_token)
    async with transaction(ctx.pool) as conn:
        found = await tokens.get_by_hash(conn, token_hash)
        if found is None:
            return
        await tokens.lock_family(conn, found.family_id)
        await tokens.revoke_family(conn, found.family_id)
        announced = await stage_revocations(
            conn,
            [
                Revocation(
                    account_id=found.account_id,
                    user_id=found.user_id,
                    reason="logout",
                    session_ids=[found.family_id],
                )
            ],
        )
    await ctx.outbox.publish(announced)


async def change_password(ctx: AuthContext, principal: Principal, data: PasswordChange) -> None:
    """A new password; every other session of the user ends (this one goes on)."""
    current_hash = await users.get_password_hash_for_account(
        ctx.pool, principal.user_id, principal.account_id
    )
    if current_hash is None:
        raise Unauthorized("This user no longer exists", code="invalid_token")
    if not await ctx.passwords.verify(data.current_password, current_hash):
        raise WrongPassword()
    new_hash = await ctx.passwords.hash(data.new_password)
    async with transaction(ctx.pool) as conn:
        await users.set_password_hash(conn, principal.user_id, principal.account_id, new_hash)
        ended = await tokens.revoke_user_families(
            conn, principal.user_id, keep_family=principal.session_id
        )
        revocation = Revocation(
            account_id=principal.account_id,
            user_id=principal.user_id,
            reason="password_changed",
            # a token from before sessions had ids: no telling this session apart
            session_ids=ended if principal.session_id is not None else None,
        )
        announced = await stage_revocations(conn, [revocation])
    await ctx.outbox.publish(announced)


async def me(ctx: AuthContext, principal: Principal) -> Me:
    user = await users.get_by_id_for_account(ctx.pool, principal.user_id, principal.account_id)
    account = await users.get_account(ctx.pool, principal.account_id)
    if user is None or account is None:
        # A validly signed token for a user that no longer exists.
        raise Unauthorized("This user no longer exists", code="invalid_token")
    return Me(user=user, account=account)
