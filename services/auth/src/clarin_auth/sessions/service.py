"""Rules for signing in: register, login, refresh (rotation with reuse detection), logout."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import asyncpg

from clarin_auth.deps import Security
from clarin_auth.exceptions import InvalidRefreshToken, RefreshTokenReused
from clarin_auth.security import hash_refresh_token
from clarin_auth.sessions import repository as tokens
from clarin_auth.sessions.schemas import LoginIn, Me, RegisterIn, Session
from clarin_auth.users import repository as users
from clarin_auth.users.service import unique_email
from clarin_common.auth import Principal
from clarin_common.contract import Account, User
from clarin_common.db import transaction
from clarin_common.errors import InvalidCredentials, Unauthorized


async def _start_session(
    conn: asyncpg.Connection,
    security: Security,
    user: User,
    account: Account,
    family_id: str | None = None,
) -> Session:
    """Sign an access token and store the next refresh token (of a new family if none)."""
    refresh_token, token_hash = security.tokens.refresh_token()
    await tokens.insert(
        conn,
        user_id=user.id,
        account_id=account.id,
        family_id=family_id,
        token_hash=token_hash,
        expires_at=datetime.now(UTC) + security.tokens.refresh_ttl,
    )
    access = security.tokens.access_token(user)
    return Session(
        access_token=access.token,
        refresh_token=refresh_token,
        expires_in=access.expires_in,
        user=user,
        account=account,
    )


async def register(pool: asyncpg.Pool, security: Security, data: RegisterIn) -> Session:
    """A new account with its first user, an admin, signed in."""
    password_hash = await security.passwords.hash(data.password)
    async with transaction(pool) as conn:
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
        return await _start_session(conn, security, user, account)


async def login(pool: asyncpg.Pool, security: Security, data: LoginIn) -> Session:
    found = await users.get_by_email_with_password(pool, data.email)
    # Always run bcrypt (against a dummy hash for an unknown email): the answer
    # takes as long whether or not the email exists.
    matches = await security.passwords.verify(
        data.password, found.password_hash if found is not None else None
    )
    if found is None or not matches:
        raise InvalidCredentials()
    async with transaction(pool) as conn:
        account = await users.get_account(conn, found.user.account_id)
        if account is None:  # pragma: no cover - a user always has its account (FK)
            raise InvalidCredentials()
        await tokens.delete_expired_for_user(conn, found.user.id)
        return await _start_session(conn, security, found.user, account)


class _Refused(enum.Enum):
    INVALID = "invalid"
    REUSED = "reused"


async def refresh(pool: asyncpg.Pool, security: Security, refresh_token: str) -> Session:
    """Spend a refresh token for a new session of the same family.

    A token presented a second time means it leaked (or a client is broken):
    the whole family is revoked, so whoever holds its newest token is signed out too.
    """
    token_hash = hash_refresh_token(refresh_token)
    outcome: Session | _Refused
    # The revocation must commit even though the caller gets a 401, so the
    # transaction returns an outcome and the error is raised after it.
    async with transaction(pool) as conn:
        outcome = await _refresh_in(conn, security, token_hash)
    if outcome is _Refused.REUSED:
        raise RefreshTokenReused()
    if outcome is _Refused.INVALID:
        raise InvalidRefreshToken()
    return outcome


async def _refresh_in(
    conn: asyncpg.Connection, security: Security, token_hash: str
) -> Session | _Refused:
    found = await tokens.get_by_hash(conn, token_hash)
    if found is None:
        return _Refused.INVALID
    await tokens.lock_family(conn, found.family_id)
    spent = await tokens.spend(conn, token_hash)
    if spent is None:
        current = await tokens.get_by_hash(conn, token_hash)
        if current is not None and current.used_at is not None:
            await tokens.revoke_family(conn, current.family_id)
            return _Refused.REUSED
        return _Refused.INVALID  # revoked or expired
    user = await users.get_by_id_for_account(conn, spent.user_id, spent.account_id)
    account = await users.get_account(conn, spent.account_id)
    if user is None or account is None:  # pragma: no cover - tokens cascade with their user
        return _Refused.INVALID
    return await _start_session(conn, security, user, account, spent.family_id)


async def logout(pool: asyncpg.Pool, refresh_token: str) -> None:
    """Revoke the family of ``refresh_token``; an unknown token is already signed out."""
    token_hash = hash_refresh_token(refresh_token)
    async with transaction(pool) as conn:
        found = await tokens.get_by_hash(conn, token_hash)
        if found is not None:
            await tokens.lock_family(conn, found.family_id)
            await tokens.revoke_family(conn, found.family_id)


async def me(pool: asyncpg.Pool, principal: Principal) -> Me:
    user = await users.get_by_id_for_account(pool, principal.user_id, principal.account_id)
    account = await users.get_account(pool, principal.account_id)
    if user is None or account is None:
        # A validly signed token for a user that no longer exists.
        raise Unauthorized("This user no longer exists", code="invalid_token")
    return Me(user=user, account=account)
