"""SQL for refresh tokens (schema ``auth``)."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from pydantic import BaseModel

from clarin_common.db import to_model


class RefreshTokenRow(BaseModel):
    id: str
    user_id: str
    account_id: str
    family_id: str
    expires_at: datetime
    family_expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


_COLUMNS = "id, user_id, account_id, family_id, expires_at, family_expires_at, used_at, revoked_at"


def _row(record: asyncpg.Record) -> RefreshTokenRow:
    return to_model(RefreshTokenRow, record)


async def insert(
    conn: asyncpg.Connection,
    *,
    user_id: str,
    account_id: str,
    family_id: str,
    token_hash: str,
    expires_at: datetime,
    family_expires_at: datetime,
) -> None:
    """Store a refresh token of ``family_id``; it never outlives its family."""
    await conn.execute(
        """
        INSERT INTO refresh_tokens
            (user_id, account_id, family_id, token_hash, expires_at, family_expires_at)
        VALUES ($1, $2, $3, $4, least($5::timestamptz, $6::timestamptz), $6)
        """,
        user_id,
        account_id,
        family_id,
        token_hash,
        expires_at,
        family_expires_at,
    )


async def lock_family(conn: asyncpg.Connection, family_id: str) -> None:
    """Serialise every change to one family until the transaction ends.

    A row lock is not enough: a logout revoking the family must also see the
    token a concurrent refresh is adding to it.
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('auth.refresh_family:' || $1::text, 0))",
        family_id,
    )


async def spend(conn: asyncpg.Connection, token_hash: str) -> RefreshTokenRow | None:
    """Mark a live token used and return it; ``None`` if it is unknown, spent, revoked or expired.

    A conditional UPDATE: of two concurrent spends of one token, the second
    waits for the first's row lock, then sees ``used_at`` set and matches nothing.
    """
    record = await conn.fetchrow(
        f"""
        UPDATE refresh_tokens SET used_at = now()
        WHERE token_hash = $1
          AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
        RETURNING {_COLUMNS}
        """,
        token_hash,
    )
    return _row(record) if record is not None else None


async def get_by_hash(conn: asyncpg.Connection, token_hash: str) -> RefreshTokenRow | None:
    record = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM refresh_tokens WHERE token_hash = $1", token_hash
    )
    return _row(record) if record is not None else None


async def revoke_family(conn: asyncpg.Connection, family_id: str) -> int:
    status = await conn.execute(
        """
        UPDATE refresh_tokens SET revoked_at = now()
        WHERE family_id = $1 AND revoked_at IS NULL
        """,
        family_id,
    )
    return int(status.split()[-1])


async def delete_expired_for_user(conn: asyncpg.Connection, user_id: str) -> None:
    # Housekeeping at sign-in: a token past its expiry can never be used again.
    await conn.execute(
        "DELETE FROM refresh_tokens WHERE user_id = $1 AND expires_at < now()", user_id
    )


async def revoke_user_families(
    conn: asyncpg.Connection, user_id: str, *, keep_family: str | None = None
) -> list[str]:
    """Revoke every live session of a user (but ``keep_family``); their family ids."""
    rows = await conn.fetch(
        """
        UPDATE refresh_tokens SET revoked_at = now()
        WHERE user_id = $1 AND revoked_at IS NULL
          AND ($2::uuid IS NULL OR family_id <> $2::uuid)
        RETURNING family_id
        """,
        user_id,
        keep_family,
    )
    return sorted({str(r["family_id"]) for r in rows})
