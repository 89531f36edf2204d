"""SQL for leads. Every function takes the account it filters by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel

from clarin_common.contract import Lead
from clarin_common.db import SqlArgs, escape_like, to_model
from clarin_common.paging import Key
from clarin_leads.leads.schemas import LeadFilters

PHONE_UNIQUE = "leads_account_phone_key"

_COLUMNS = """
    id, account_id, name, phone, email, company, stage, tags, notes, value,
    assigned_to, source, chat_id, last_contact_at, created_at, updated_at
"""

# columns a client may write (PUT), in a fixed order
WRITABLE = (
    "name",
    "phone",
    "email",
    "company",
    "stage",
    "tags",
    "notes",
    "value",
    "assigned_to",
)


def to_lead(row: asyncpg.Record) -> Lead:
    return to_model(Lead, row)


async def list_for_account(
    conn: asyncpg.Connection,
    account_id: str,
    filters: LeadFilters,
    *,
    limit: int,
    after: Key | None,
    phone_query: str | None,
) -> list[Lead]:
    """Newest first, ``(created_at, id)`` breaking ties; ``limit`` rows after ``after``."""
    where = ["account_id = $1"]
    args = SqlArgs(account_id)
    arg = args.add
    if filters.stage is not None:
        where.append(f"stage = {arg(filters.stage)}")
    if filters.tag is not None:
        tag = arg(filters.tag)
        where.append(f"EXISTS (SELECT 1 FROM unnest(tags) AS t WHERE lower(t) = lower({tag}))")
    if filters.assigned_to is not None:
        where.append(f"assigned_to = {arg(filters.assigned_to)}")
    if filters.q is not None:
        pattern = arg(f"%{escape_like(filters.q)}%")
        alternatives = [
            f"name ILIKE {pattern}",
            f"email ILIKE {pattern}",
            f"company ILIKE {pattern}",
            f"phone ILIKE {pattern}",
        ]
        if phone_query:
            alternatives.append(f"phone LIKE {arg(f'%{phone_query}%')}")
        where.append("(" + " OR ".join(alternatives) + ")")
    if after is not None:
        where.append(f"(created_at, id) < ({arg(after.at)}, {arg(after.id)}::uuid)")
    sql = (
        f"SELECT {_COLUMNS} FROM leads WHERE {' AND '.join(where)} "
        f"ORDER BY created_at DESC, id DESC LIMIT {arg(limit)}"
    )
    rows = await conn.fetch(sql, *args.values)
    return [to_lead(r) for r in rows]


async def get_by_id_for_account(
    conn: asyncpg.Connection, lead_id: str, account_id: str, *, for_update: bool = False
) -> Lead | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM leads WHERE id = $1 AND account_id = $2{lock}",
        lead_id,
        account_id,
    )
    return to_lead(row) if row else None


async def insert(conn: asyncpg.Connection, account_id: str, values: dict[str, Any]) -> Lead:
    """Insert a manual lead; a duplicate phone raises UniqueViolationError."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO leads (account_id, name, phone, email, company, stage, tags, notes,
                           value, assigned_to, source)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'manual')
        RETURNING {_COLUMNS}
        """,
        account_id,
        values["name"],
        values["phone"],
        values["email"],
        values["company"],
        values["stage"],
        values["tags"],
        values["notes"],
        values["value"],
        values["assigned_to"],
    )
    assert row is not None
    return to_lead(row)


async def update_for_account(
    conn: asyncpg.Connection, lead_id: str, account_id: str, changes: dict[str, Any]
) -> Lead | None:
    columns = [c for c in WRITABLE if c in changes]
    sets = [f"{c} = ${i + 3}" for i, c in enumerate(columns)]
    sets.append("updated_at = now()")
    row = await conn.fetchrow(
        f"UPDATE leads SET {', '.join(sets)} WHERE id = $1 AND account_id = $2 "
        f"RETURNING {_COLUMNS}",
        lead_id,
        account_id,
        *(changes[c] for c in columns),
    )
    return to_lead(row) if row else None


async def delete_for_account(conn: asyncpg.Connection, lead_id: str, account_id: str) -> bool:
    deleted = await conn.fetchval(
        "DELETE FROM leads WHERE id = $1 AND account_id = $2 RETURNING id", lead_id, account_id
    )
    return deleted is not None


@dataclass(frozen=True)
class InboundContact:
    """The latest inbound WhatsApp contact from one number of one account."""

    account_id: str
    phone: str
    name: str
    chat_id: str
    contact_at: datetime


class ContactUpsert(BaseModel):
    """A lead a batch of WhatsApp contacts changed in a way worth an event."""

    lead: Lead
    # else an update to announce: the chat newly linked, or a contact at least
    # ``announce_every`` after the last one announced
    created: bool


# The announce rule, shared by both statements: created, chat newly linked, or a
# contact at least $6 seconds after the last one announced.
_ANNOUNCED_AT = """
    CASE
        WHEN leads.contact_announced_at IS NULL
          OR {at} >= leads.contact_announced_at + make_interval(secs => $6)
        THEN {at}
        ELSE leads.contact_announced_at
    END
"""

# Known numbers: a plain UPDATE (an INSERT … ON CONFLICT costs PostgreSQL several
# times more per row, and a busy chat's every batch takes this path). Answers the
# leads worth an event and, as bare keys (``missing``), the contacts that found
# no lead to move: new numbers, or a lead deleted meanwhile.
_TOUCH_KNOWN = f"""
WITH c AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[]
    ) AS c(account_id, name, phone, chat_id, contact_at)
),
prev AS (
    SELECT l.account_id, l.phone, l.chat_id, l.contact_announced_at,
           -- nothing to write: an older or redelivered message of a linked lead
           (l.last_contact_at >= c.contact_at AND l.chat_id IS NOT NULL) AS current
    FROM leads l JOIN c ON l.account_id = c.account_id AND l.phone = c.phone
),
up AS (
    UPDATE leads SET
        last_contact_at = GREATEST(leads.last_contact_at, c.contact_at),
        chat_id = COALESCE(leads.chat_id, c.chat_id),
        contact_announced_at = {_ANNOUNCED_AT.format(at="c.contact_at")},
        updated_at = now()
    FROM c
    WHERE leads.account_id = c.account_id AND leads.phone = c.phone
      AND (leads.last_contact_at IS NULL
           OR leads.last_contact_at < c.contact_at
           OR leads.chat_id IS NULL)
    RETURNING {", ".join(f"leads.{c.strip()}" for c in _COLUMNS.split(","))},
              leads.contact_announced_at
)
SELECT false AS missing, up.*
FROM up JOIN prev ON prev.account_id = up.account_id AND prev.phone = up.phone
WHERE (prev.chat_id IS NULL AND up.chat_id IS NOT NULL)
   OR up.contact_announced_at IS DISTINCT FROM prev.contact_announced_at
UNION ALL
SELECT true, NULL, c.account_id, NULL, c.phone, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM c
WHERE NOT EXISTS (SELECT 1 FROM up WHERE up.account_id = c.account_id AND up.phone = c.phone)
  AND NOT EXISTS (
      SELECT 1 FROM prev
      WHERE prev.account_id = c.account_id AND prev.phone = c.phone AND prev.current
  )
"""


def _contact_arrays(contacts: list[InboundContact]) -> list[list[Any]]:
    return [
        [c.account_id for c in contacts],
        [c.name for c in contacts],
        [c.phone for c in contacts],
        [c.chat_id for c in contacts],
        [c.contact_at for c in contacts],
    ]


async def touch_many_from_whatsapp(
    conn: asyncpg.Connection, contacts: list[InboundContact], announce_every: float = 60.0
) -> list[ContactUpsert]:
    """:func:`upsert_many_from_whatsapp` in two steps: an UPDATE of the leads the
    numbers have, then the upsert for those that found none (new numbers, a lead
    deleted meanwhile; skipped when there are none, the usual case of a busy
    account). Same answers; the upsert's unique index still settles a race
    between two batches creating the same lead."""
    if not contacts:
        return []
    rows = await conn.fetch(_TOUCH_KNOWN, *_contact_arrays(contacts), float(announce_every))
    missing = {(str(r["account_id"]), r["phone"]) for r in rows if r["missing"]}
    changed = [ContactUpsert(lead=to_lead(r), created=False) for r in rows if not r["missing"]]
    if missing:
        new = [c for c in contacts if (c.account_id, c.phone) in missing]
        changed += await upsert_many_from_whatsapp(conn, new, announce_every)
    return changed


async def upsert_many_from_whatsapp(
    conn: asyncpg.Connection, contacts: list[InboundContact], announce_every: float = 60.0
) -> list[ContactUpsert]:
    """Create the lead of each number that has none, else move its
    ``last_contact_at`` forward (and link the chat if the lead has none).

    One statement for the batch: ``contacts`` hold one entry per (account, phone),
    written in (account, phone) order so that concurrent batches lock rows in the
    same order; two messages of a new number at once still make one lead (the
    second waits on the unique index, then takes the update branch). Returns only
    the leads worth an event (created, or an update to announce): a busy chat's
    every other message moves ``last_contact_at`` without a row coming back to be
    decoded. An older or redelivered message changes nothing.
    """
    if not contacts:
        return []
    rows = await conn.fetch(
        f"""
        WITH c AS (
            SELECT * FROM unnest(
                $1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[]
            ) AS c(account_id, name, phone, chat_id, contact_at)
        ),
        prev AS (
            SELECT l.account_id, l.phone, l.chat_id, l.contact_announced_at
            FROM leads l JOIN c ON l.account_id = c.account_id AND l.phone = c.phone
        ),
        up AS (
            INSERT INTO leads (account_id, name, phone, stage, source, chat_id,
                               last_contact_at, contact_announced_at)
            SELECT c.account_id, c.name, c.phone, 'new', 'whatsapp', c.chat_id,
                   c.contact_at, c.contact_at
            FROM c ORDER BY c.account_id, c.phone
            ON CONFLICT (account_id, phone) DO UPDATE SET
                last_contact_at = GREATEST(leads.last_contact_at, EXCLUDED.last_contact_at),
                chat_id = COALESCE(leads.chat_id, EXCLUDED.chat_id),
                contact_announced_at = CASE
                    WHEN leads.contact_announced_at IS NULL
                      OR EXCLUDED.last_contact_at
                         >= leads.contact_announced_at + make_interval(secs => $6)
                    THEN EXCLUDED.last_contact_at
                    ELSE leads.contact_announced_at
                END,
                updated_at = now()
            WHERE leads.last_contact_at IS NULL
               OR leads.last_contact_at < EXCLUDED.last_contact_at
               OR leads.chat_id IS NULL
            RETURNING {_COLUMNS}, contact_announced_at, (xmax = 0) AS created
        )
        SELECT up.*
        FROM up LEFT JOIN prev ON prev.account_id = up.account_id AND prev.phone = up.phone
        WHERE up.created
           OR (prev.chat_id IS NULL AND up.chat_id IS NOT NULL)
           OR up.contact_announced_at IS DISTINCT FROM prev.contact_announced_at
        """,
        [c.account_id for c in contacts],
        [c.name for c in contacts],
        [c.phone for c in contacts],
        [c.chat_id for c in contacts],
        [c.contact_at for c in contacts],
        float(announce_every),
    )
    return [ContactUpsert(lead=to_lead(row), created=bool(row["created"])) for row in rows]
