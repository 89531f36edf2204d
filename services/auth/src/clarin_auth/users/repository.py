"""SQL for accounts and users (schema ``auth``)."""

from __future__ import annotations

import asyncpg
from pydantic import BaseModel

from clarin_common.contract import Account, User
from clarin_common.db import to_model

_USER_COLUMNS = "id, account_id, email, name, role, disabled"


def _user(row: asyncpg.Record) -> User:
    return to_model(User, row)


def _account(row: asyncpg.Record) -> Account:
    return to_model(Account, row)


class UserWithPassword(BaseModel):
    user: User
    password_hash: str


async def create_account(conn: asyncpg.Connection, name: str) -> Account:
    row = await conn.fetchrow("INSERT INTO accounts (name) VALUES ($1) RETURNING id, name", name)
    return _account(row)


async def get_account(conn: asyncpg.Connection | asyncpg.Pool, account_id: str) -> Account | None:
    row = await conn.fetchrow("SELECT id, name FROM accounts WHERE id = $1", account_id)
    return _account(row) if row is not None else None


async def create_user(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    account_id: str,
    email: str,
    name: str,
    role: str,
    password_hash: str,
) -> User:
    """Raises ``asyncpg.UniqueViolationError`` (``users_email_key``) for a taken email."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO users (account_id, email, name, role, password_hash)
        VALUES ($1, $2, $3, $4, $5)
        RETURNING {_USER_COLUMNS}
        """,
        account_id,
        email,
        name,
        role,
        password_hash,
    )
    return _user(row)


async def get_by_email_with_password(
    conn: asyncpg.Connection | asyncpg.Pool, email: str
) -> UserWithPassword | None:
    # Login is the one lookup without an account: the email is unique across accounts.
    row = await conn.fetchrow(
        f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE email = $1", email
    )
    if row is None:
        return None
    return UserWithPassword(user=_user(row), password_hash=row["password_hash"])


async def get_by_id_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: str, account_id: str
) -> User | None:
    row = await conn.fetchrow(
        f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1 AND account_id = $2",
        user_id,
        account_id,
    )
    return _user(row) if row is not None else None


async def get_for_session_for_account(
    conn: asyncpg.Connection, user_id: str, account_id: str
) -> User | None:
    """The user, holding a share lock until the transaction ends: a concurrent
    disable or password change waits for the new session, then revokes it too."""
    row = await conn.fetchrow(
        f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1 AND account_id = $2 FOR SHARE",
        user_id,
        account_id,
    )
    return _user(row) if row is not None else None


async def list_for_account(conn: asyncpg.Connection | asyncpg.Pool, account_id: str) -> list[User]:
    rows = await conn.fetch(
        f"SELECT {_USER_COLUMNS} FROM users WHERE account_id = $1 ORDER BY created_at, id",
        account_id,
    )
    return [_user(row) for row in rows]


async def lock_account_users(conn: asyncpg.Connection, account_id: str) -> None:
    """Serialise changes to an account's users until the transaction ends, so that
    two admins demoting each other at once cannot leave the account without one."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('auth.account_users:' || $1::text, 0))",
        account_id,
    )


async def count_active_admins(conn: asyncpg.Connection, account_id: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM users WHERE account_id = $1 AND role = 'admin' AND NOT disabled",
        account_id,
    )
    return count


async def update_for_account(
    conn: asyncpg.Connection,
    user_id: str,
    account_id: str,
    *,
    name: str | None,
    role: str | None,
    disabled: bool | None,
) -> User | None:
    """Set the given fields (None leaves one as it is)."""
    row = await conn.fetchrow(
        f"""
        UPDATE users SET
            name = coalesce($3, name),
            role = coalesce($4, role),
            disabled = coalesce($5, disabled)
        WHERE id = $1 AND account_id = $2
        RETURNING {_USER_COLUMNS}
        """,
        user_id,
        account_id,
        name,
        role,
        disabled,
    )
    return _user(row) if row is not None else None


async def delete_for_account(conn: asyncpg.Connection, user_id: str, account_id: str) -> bool:
    status = await conn.execute(
        "DELETE FROM users WHERE id = $1 AND account_id = $2", user_id, account_id
    )
    return bool(status.endswith(" 1"))


async def get_password_hash_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: str, account_id: str
) -> str | None:
    value: str | None = await conn.fetchval(
        "SELECT password_hash FROM users WHERE id = $1 AND account_id = $2", user_id, account_id
    )
    return value


async def set_password_hash(
    conn: asyncpg.Connection, user_id: str, account_id: str, password_hash: str
) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = $3 WHERE id = $1 AND account_id = $2",
        user_id,
        account_id,
        password_hash,
    )
