"""SQL for webhooks and their delivery log. Every function takes the account it filters by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from clarin_webhooks.webhooks.schemas import Delivery, Webhook

_WEBHOOK = "id, url, events, active, created_at"
_DELIVERY = """
    id, webhook_id, event_id, event_type, status, status_code, attempt, error,
    created_at, delivered_at, next_attempt_at
"""


def to_webhook(row: asyncpg.Record) -> Webhook:
    return Webhook(
        id=str(row["id"]),
        url=row["url"],
        events=list(row["events"]),
        active=row["active"],
        created_at=row["created_at"],
    )


def to_delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(
        id=str(row["id"]),
        webhook_id=str(row["webhook_id"]),
        event_id=row["event_id"],
        event_type=row["event_type"],
        status=row["status"],
        status_code=row["status_code"],
        attempt=row["attempt"],
        error=row["error"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
    )


@dataclass(frozen=True)
class PageKey:
    created_at: datetime
    id: str


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
    return to_webhook(row) if row is not None else None


async def list_for_account(conn: asyncpg.Connection, account_id: str) -> list[Webhook]:
    rows = await conn.fetch(
        f"SELECT {_WEBHOOK} FROM webhooks WHERE account_id = $1 ORDER BY created_at, id",
        account_id,
    )
    return [to_webhook(r) for r in rows]


async def get_by_id_for_account(
    conn: asyncpg.Connection, account_id: str, webhook_id: str
) -> Webhook | None:
    row = await conn.fetchrow(
        f"SELECT {_WEBHOOK} FROM webhooks WHERE account_id = $1 AND id = $2",
        account_id,
        webhook_id,
    )
    return to_webhook(row) if row is not None else None


async def update_for_account(
    conn: asyncpg.Connection, account_id: str, webhook_id: str, changes: dict[str, Any]
) -> Webhook | None:
    columns = [c for c in ("url", "events", "active") if c in changes]
    assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=3))
    row = await conn.fetchrow(
        f"""
        UPDATE webhooks SET {assignments}{", " if assignments else ""}updated_at = now()
        WHERE account_id = $1 AND id = $2
        RETURNING {_WEBHOOK}
        """,
        account_id,
        webhook_id,
        *(changes[c] for c in columns),
    )
    return to_webhook(row) if row is not None else None


async def delete_for_account(conn: asyncpg.Connection, account_id: str, webhook_id: str) -> bool:
    result: str = await conn.execute(
        "DELETE FROM webhooks WHERE account_id = $1 AND id = $2", account_id, webhook_id
    )
    return result == "DELETE 1"


async def list_deliveries_for_account(
    conn: asyncpg.Connection,
    account_id: str,
    webhook_id: str,
    *,
    limit: int,
    after: PageKey | None,
    status: str | None,
) -> list[Delivery]:
    args: list[Any] = [account_id, webhook_id]
    where = ["account_id = $1", "webhook_id = $2"]
    if status is not None:
        args.append(status)
        where.append(f"status = ${len(args)}")
    if after is not None:
        args += [after.created_at, after.id]
        where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)}::uuid)")
    args.append(limit)
    rows = await conn.fetch(
        f"""
        SELECT {_DELIVERY} FROM deliveries
        WHERE {" AND ".join(where)}
        ORDER BY created_at DESC, id DESC
        LIMIT ${len(args)}
        """,
        *args,
    )
    return [to_delivery(r) for r in rows]


async def get_delivery_for_account(
    conn: asyncpg.Connection, account_id: str, webhook_id: str, delivery_id: str
) -> Delivery | None:
    row = await conn.fetchrow(
        f"""
        SELECT {_DELIVERY} FROM deliveries
        WHERE account_id = $1 AND webhook_id = $2 AND id = $3
        """,
        account_id,
        webhook_id,
        delivery_id,
    )
    return to_delivery(row) if row is not None else None


async def schedule_again_for_account(
    conn: asyncpg.Connection,
    account_id: str,
    webhook_id: str,
    delivery_id: str,
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
        WHERE account_id = $1 AND webhook_id = $2 AND id = $3
          AND (status <> 'sending' OR next_attempt_at <= now())
        RETURNING {_DELIVERY}
        """,
        account_id,
        webhook_id,
        delivery_id,
        float(retry_window),
    )
    return to_delivery(row) if row is not None else None
