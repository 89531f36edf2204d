"""SQL for webhooks and their delivery log. Every function takes the account it
filters by, after the id of the row it names: ``(conn, id, account_id, …)``."""

from __future__ import annotations

from typing import Any

import asyncpg

from clarin_common.db import SqlArgs, to_model
from clarin_common.paging import Key
from clarin_webhooks.webhooks.schemas import Delivery, Webhook

_WEBHOOK = "id, url, events, active, created_at"
# the next attempt is shown only while one is coming
_DELIVERY = """
    id, webhook_id, event_id, event_type, status, status_code, attempt, error,
    created_at, delivered_at,
    CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at
"""


async def insert_within_limit(
    conn: asyncpg.Connection,
    account_id: str,
    url: str,
    events: list[str],
    secret_encrypted: str,
    limit: int,
) -> Webhook | None:
    """A new webhook, or None when the account already has ``limit`` of them.
    Call inside a transaction: creations of one account take turns."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('webhooks:' || $1::text))", account_id
    )
    row = await conn.fetchrow(
        f"""
        INSERT INTO webhooks (account_id, url, events, secret_encrypted)
        SELECT $1, $2, $3, $4
        WHERE (SELECT count(*) FROM webhooks WHERE account_id = $1) < $5
        RETURNING {_WEBHOOK}
        """,
        account_id,
        url,
        events,
        secret_encrypted,
        limit,
    )
    return to_model(Webhook, row) if row is not None else None


async def list_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str
) -> list[Webhook]:
    rows = await conn.fetch(
        f"SELECT {_WEBHOOK} FROM webhooks WHERE account_id = $1 ORDER BY created_at, id",
        account_id,
    )
    return [to_model(Webhook, r) for r in rows]


async def get_by_id_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, webhook_id: str, account_id: str
) -> Webhook | None:
    row = await conn.fetchrow(
        f"SELECT {_WEBHOOK} FROM webhooks WHERE id = $1 AND account_id = $2",
        webhook_id,
        account_id,
    )
    return to_model(Webhook, row) if row is not None else None


async def update_for_account(
    conn: asyncpg.Connection | asyncpg.Pool,
    webhook_id: str,
    account_id: str,
    changes: dict[str, Any],
) -> Webhook | None:
    columns = [c for c in ("url", "events", "active") if c in changes]
    args = SqlArgs(webhook_id, account_id)
    sets = [f"{c} = {args.add(changes[c])}" for c in columns]
    sets.append("updated_at = now()")
    row = await conn.fetchrow(
        f"UPDATE webhooks SET {', '.join(sets)} WHERE id = $1 AND account_id = $2 "
        f"RETURNING {_WEBHOOK}",
        *args.values,
    )
    return to_model(Webhook, row) if row is not None else None


async def delete_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, webhook_id: str, account_id: str
) -> bool:
    deleted = await conn.fetchval(
        "DELETE FROM webhooks WHERE id = $1 AND account_id = $2 RETURNING id",
        webhook_id,
        account_id,
    )
    return deleted is not None


async def list_deliveries_for_account(
    conn: asyncpg.Connection | asyncpg.Pool,
    webhook_id: str,
    account_id: str,
    *,
    limit: int,
    after: Key | None,
    status: str | None,
) -> list[Delivery]:
    """Newest first, ``(created_at, id)`` breaking ties; ``limit`` rows after ``after``."""
    args = SqlArgs(webhook_id, account_id)
    where = ["webhook_id = $1", "account_id = $2"]
    if status is not None:
        where.append(f"status = {args.add(status)}")
    if after is not None:
        where.append(f"(created_at, id) < ({args.add(after.at)}, {args.add(after.id)}::uuid)")
    rows = await conn.fetch(
        f"SELECT {_DELIVERY} FROM deliveries WHERE {' AND '.join(where)} "
        f"ORDER BY created_at DESC, id DESC LIMIT {args.add(limit)}",
        *args.values,
    )
    return [to_model(Delivery, r) for r in rows]


async def get_delivery_for_account(
    conn: asyncpg.Connection, delivery_id: str, webhook_id: str, account_id: str
) -> Delivery | None:
    row = await conn.fetchrow(
        f"""
        SELECT {_DELIVERY} FROM deliveries
        WHERE id = $1 AND webhook_id = $2 AND account_id = $3
        """,
        delivery_id,
        webhook_id,
        account_id,
    )
    return to_model(Delivery, row) if row is not None else None


async def schedule_again_for_account(
    conn: asyncpg.Connection,
    delivery_id: str,
    webhook_id: str,
    account_id: str,
    retry_window: float,
) -> Delivery | None:
    """Make a delivery due now with a fresh retry window (a redelivery by hand).

    Returns None when the delivery is not there or is being attempted right now.
    """
    row = await conn.fetchrow(
        f"""
        UPDATE deliveries SET
            status = 'pending',
            next_attempt_at = now(),
            give_up_at = GREATEST(give_up_at, now() + make_interval(secs => $4))
        WHERE id = $1 AND webhook_id = $2 AND account_id = $3
          AND (status <> 'sending' OR next_attempt_at <= now())
        RETURNING {_DELIVERY}
        """,
        delivery_id,
        webhook_id,
        account_id,
        float(retry_window),
    )
    return to_model(Delivery, row) if row is not None else None
