"""The SQL of campaigns and their recipients."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from clarin_campaigns.campaigns.schemas import Recipient
from clarin_common.contract import Audience, Campaign
from clarin_common.db import to_model

# forward-only recipient statuses: a later event never moves one back
RANK = {"waiting": 0, "sending": 1, "queued": 2, "sent": 3, "delivered": 4, "read": 5}

_COUNTERS = """
    count(*) FILTER (WHERE r.status NOT IN ('skipped')) AS total,
    count(*) FILTER (WHERE r.status = 'queued') AS queued,
    count(*) FILTER (WHERE r.status IN ('sent', 'delivered', 'read')) AS sent,
    count(*) FILTER (WHERE r.status IN ('delivered', 'read')) AS delivered,
    count(*) FILTER (WHERE r.status = 'read') AS read,
    count(*) FILTER (WHERE r.status = 'failed') AS failed,
    count(*) FILTER (WHERE r.status = 'skipped') AS skipped
"""

_SELECT = f"""
    SELECT c.*, {_COUNTERS}
    FROM campaigns c LEFT JOIN recipients r ON r.campaign_id = c.id
"""


@dataclass(frozen=True)
class NewRecipient:
    lead_id: str
    name: str
    phone: str | None
    status: str  # waiting or skipped
    error: str | None


def _campaign(row: asyncpg.Record) -> Campaign:
    values = dict(row)
    audience = values["audience"]
    values["audience"] = Audience.model_validate(
        json.loads(audience) if isinstance(audience, str) else audience
    )
    return to_model(Campaign, values)


async def insert(
    conn: asyncpg.Connection,
    campaign_id: str,
    account_id: str,
    created_by: str,
    name: str,
    device_id: str,
    body: str,
    audience: Audience,
    per_minute: int,
    recipients: Sequence[NewRecipient],
) -> None:
    await conn.execute(
        """
        INSERT INTO campaigns (id, account_id, name, device_id, body, audience, per_minute,
                               created_by)
        VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)
        """,
        campaign_id,
        account_id,
        name,
        device_id,
        body,
        audience.model_dump_json(exclude_none=True),
        per_minute,
        created_by,
    )
    await conn.execute(
        """
        INSERT INTO recipients (campaign_id, lead_id, account_id, position, name, phone,
                                status, error)
        SELECT $1, r.lead_id, $2, r.position, r.name, r.phone, r.status, r.error
        FROM unnest($3::uuid[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[])
            AS r(lead_id, position, name, phone, status, error)
        """,
        campaign_id,
        account_id,
        [r.lead_id for r in recipients],
        list(range(len(recipients))),
        [r.name for r in recipients],
        [r.phone for r in recipients],
        [r.status for r in recipients],
        [r.error for r in recipients],
    )


async def get_by_id_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str, account_id: str
) -> Campaign | None:
    row = await conn.fetchrow(
        f"{_SELECT} WHERE c.id = $1 AND c.account_id = $2 GROUP BY c.id", campaign_id, account_id
    )
    return _campaign(row) if row is not None else None


async def get_many(
    conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[str]
) -> list[tuple[str, Campaign]]:
    """``(account_id, campaign)`` of each id."""
    rows = await conn.fetch(f"{_SELECT} WHERE c.id = ANY($1::uuid[]) GROUP BY c.id", list(ids))
    return [(str(r["account_id"]), _campaign(r)) for r in rows]


async def list_for_account(
    pool: asyncpg.Pool, account_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[Campaign]:
    rows = await pool.fetch(
        f"""
        {_SELECT}
        WHERE c.account_id = $1
          AND ($2::timestamptz IS NULL OR (c.created_at, c.id) < ($2, $3::uuid))
        GROUP BY c.id
        ORDER BY c.created_at DESC, c.id DESC
        LIMIT $4
        """,
        account_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_campaign(r) for r in rows]


async def set_status(
    conn: asyncpg.Connection,
    campaign_id: str,
    account_id: str,
    status: str,
    *,
    from_statuses: Sequence[str],
) -> bool:
    """Move the campaign to ``status`` if it is in one of ``from_statuses``."""
    row = await conn.fetchrow(
        """
        UPDATE campaigns SET status = $3, progress_dirty = true,
            started_at = CASE WHEN $3 = 'running' THEN coalesce(started_at, now())
                              ELSE started_at END,
            finished_at = CASE WHEN $3 IN ('done', 'cancelled') THEN now() ELSE finished_at END
        WHERE id = $1 AND account_id = $2 AND status = ANY($4::text[])
        RETURNING id
        """,
        campaign_id,
        account_id,
        status,
        list(from_statuses),
    )
    return row is not None


async def cancel_waiting(conn: asyncpg.Connection, campaign_id: str) -> None:
    await conn.execute(
        """
        UPDATE recipients SET status = 'cancelled', updated_at = now()
        WHERE campaign_id = $1 AND status = 'waiting'
        """,
        campaign_id,
    )


async def recipients_page(
    pool: asyncpg.Pool,
    campaign_id: str,
    account_id: str,
    status: str | None,
    after: int | None,
    limit: int,
) -> list[tuple[int, Recipient]]:
    rows = await pool.fetch(
        """
        SELECT position, lead_id, name, phone, status, message_id, error FROM recipients
        WHERE campaign_id = $1 AND account_id = $2
          AND ($3::text IS NULL OR status = $3) AND ($4::int IS NULL OR position > $4)
        ORDER BY position
        LIMIT $5
        """,
        campaign_id,
        account_id,
        status,
        after,
        limit,
    )
    return [(r["position"], to_model(Recipient, r)) for r in rows]


# ---- the scheduler -------------------------------------------------------------------


@dataclass(frozen=True)
class Running:
    id: str
    account_id: str
    device_id: str
    body: str
    per_minute: int


async def running(pool: asyncpg.Pool) -> list[Running]:
    """Running campaigns, oldest started first (they take turns on a device in that order)."""
    rows = await pool.fetch(
        """
        SELECT id, account_id, device_id, body, per_minute FROM campaigns
        WHERE status = 'running' ORDER BY started_at, id
        """
    )
    return [
        Running(str(r["id"]), str(r["account_id"]), str(r["device_id"]), r["body"], r["per_minute"])
        for r in rows
    ]


async def last_handed(pool: asyncpg.Pool, device_ids: Sequence[str]) -> dict[str, datetime]:
    """When each device was last handed a campaign send (pacing survives a restart)."""
    rows = await pool.fetch(
        """
        SELECT c.device_id, max(r.handed_at) AS at
        FROM campaigns c JOIN recipients r ON r.campaign_id = c.id
        WHERE c.device_id = ANY($1::uuid[]) AND r.handed_at IS NOT NULL
        GROUP BY c.device_id
        """,
        list(device_ids),
    )
    return {str(r["device_id"]): r["at"] for r in rows}


@dataclass(frozen=True)
class Claimed:
    lead_id: str
    name: str
    phone: str
    message_id: str


async def claim_next(conn: asyncpg.Connection, campaign_id: str) -> Claimed | None:
    """The next recipient to hand over: one left ``sending`` by a crash first (same
    message id again), else the next ``waiting`` one, which gets its message id now."""
    row = await conn.fetchrow(
        """
        UPDATE recipients SET status = 'sending',
            message_id = coalesce(message_id, gen_random_uuid()),
            handed_at = now(), updated_at = now()
        WHERE (campaign_id, lead_id) = (
            SELECT campaign_id, lead_id FROM recipients
            WHERE campaign_id = $1 AND status IN ('sending', 'waiting')
            ORDER BY status = 'sending' DESC, position
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING lead_id, name, phone, message_id
        """,
        campaign_id,
    )
    if row is None:
        return None
    return Claimed(str(row["lead_id"]), row["name"], row["phone"], str(row["message_id"]))


async def mark_handed(
    conn: asyncpg.Connection | asyncpg.Pool,
    campaign_id: str,
    lead_id: str,
    status: str,
    error: str | None = None,
) -> None:
    await conn.execute(
        """
        UPDATE recipients SET status = $3, error = $4, updated_at = now()
        WHERE campaign_id = $1 AND lead_id = $2 AND status = 'sending'
        """,
        campaign_id,
        lead_id,
        status,
        error,
    )
    await conn.execute("UPDATE campaigns SET progress_dirty = true WHERE id = $1", campaign_id)


async def finish_if_done(
    conn: asyncpg.Connection | asyncpg.Pool, campaign_ids: Sequence[str]
) -> list[str]:
    """Running campaigns with nobody left to send to or waiting on become ``done``."""
    rows = await conn.fetch(
        """
        UPDATE campaigns c SET status = 'done', finished_at = now(), progress_dirty = true
        WHERE c.id = ANY($1::uuid[]) AND c.status = 'running'
          AND NOT EXISTS (
            SELECT 1 FROM recipients r
            WHERE r.campaign_id = c.id AND r.status IN ('waiting', 'sending', 'queued')
          )
        RETURNING c.id
        """,
        list(campaign_ids),
    )
    return [str(r["id"]) for r in rows]


# ---- outcomes (message_sent, message_status) -------------------------------------------


def furthest_outcomes(
    outcomes: Sequence[tuple[str, str, str | None]],
) -> dict[str, tuple[str, str, str | None]]:
    """Each message's furthest outcome: the highest rank; ``failed`` only when
    nothing else came for it."""
    best: dict[str, tuple[str, str, str | None]] = {}
    for outcome in outcomes:
        held = best.get(outcome[0])
        if held is None or _ahead(outcome[1], held[1]):
            best[outcome[0]] = outcome
    return best


def _ahead(status: str, than: str) -> bool:
    if than == "failed":
        return status != "failed"
    if status == "failed":
        return False
    return RANK.get(status, -1) > RANK.get(than, -1)


async def apply_outcomes(
    conn: asyncpg.Connection, outcomes: Sequence[tuple[str, str, str | None]]
) -> list[str]:
    """``(message_id, status, error)``s applied forward-only; the campaigns touched."""
    # one row per message: an UPDATE … FROM joined to several rows of the same
    # recipient takes one of them at random, so a batch holding sent, delivered and
    # read of one message could land on sent
    outcomes = list(furthest_outcomes(outcomes).values())
    if not outcomes:
        return []
    rows = await conn.fetch(
        """
        UPDATE recipients r SET status = o.status, error = coalesce(o.error, r.error),
            updated_at = now()
        FROM unnest($1::uuid[], $2::text[], $3::text[]) AS o(message_id, status, error)
        WHERE r.message_id = o.message_id
          AND (
            (o.status = 'failed' AND r.status IN ('sending', 'queued'))
            OR (o.status <> 'failed' AND r.status NOT IN ('failed', 'skipped', 'cancelled')
                AND array_position($4::text[], r.status) < array_position($4::text[], o.status))
          )
        RETURNING r.campaign_id
        """,
        [o[0] for o in outcomes],
        [o[1] for o in outcomes],
        [o[2] for o in outcomes],
        list(RANK),
    )
    touched = sorted({str(r["campaign_id"]) for r in rows})
    if touched:
        await conn.execute(
            "UPDATE campaigns SET progress_dirty = true WHERE id = ANY($1::uuid[])", touched
        )
    return touched


async def take_dirty(conn: asyncpg.Connection) -> list[str]:
    """The campaigns whose counters changed since the last call (running ones with
    nobody left become ``done`` first)."""
    dirty = [
        str(r["id"])
        for r in await conn.fetch("SELECT id FROM campaigns WHERE progress_dirty FOR UPDATE")
    ]
    if dirty:
        await finish_if_done(conn, dirty)
        await conn.execute(
            "UPDATE campaigns SET progress_dirty = false WHERE id = ANY($1::uuid[])", dirty
        )
    return dirty
