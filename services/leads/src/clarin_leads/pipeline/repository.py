"""SQL for the pipeline stages."""

from __future__ import annotations

import asyncpg

from clarin_leads.pipeline.schemas import Stage

# key, API name (the web app translates keys), position
DEFAULT_STAGES: tuple[tuple[str, str, int], ...] = (
    ("new", "New", 0),
    ("contacted", "Contacted", 1),
    ("qualified", "Qualified", 2),
    ("proposal", "Proposal", 3),
    ("won", "Won", 4),
    ("lost", "Lost", 5),
)

_SEED = """
INSERT INTO stages (account_id, key, name, position)
SELECT $1, s.key, s.name, s.position
FROM unnest($2::text[], $3::text[], $4::int[]) AS s(key, name, position)
WHERE NOT EXISTS (SELECT 1 FROM stages WHERE account_id = $1)
ON CONFLICT (account_id, key) DO NOTHING
"""


async def ensure_defaults_for_account(conn: asyncpg.Connection, account_id: str) -> None:
    """Seed the default stages the first time an account is seen.

    Safe under concurrency: a second seeder waits on the first one's rows and
    then inserts nothing.
    """
    await conn.execute(
        _SEED,
        account_id,
        [s[0] for s in DEFAULT_STAGES],
        [s[1] for s in DEFAULT_STAGES],
        [s[2] for s in DEFAULT_STAGES],
    )


_SEED_MANY = """
INSERT INTO stages (account_id, key, name, position)
SELECT a.account_id, s.key, s.name, s.position
FROM unnest($1::uuid[]) AS a(account_id)
CROSS JOIN unnest($2::text[], $3::text[], $4::int[]) AS s(key, name, position)
WHERE NOT EXISTS (SELECT 1 FROM stages WHERE stages.account_id = a.account_id)
ORDER BY a.account_id, s.key
ON CONFLICT (account_id, key) DO NOTHING
"""


async def ensure_defaults_for_accounts(conn: asyncpg.Connection, account_ids: list[str]) -> None:
    """:func:`ensure_defaults_for_account` for many accounts in one statement (a
    batch of WhatsApp messages touches many); accounts seeded already cost one
    index probe each."""
    if not account_ids:
        return
    await conn.execute(
        _SEED_MANY,
        sorted(set(account_ids)),
        [s[0] for s in DEFAULT_STAGES],
        [s[1] for s in DEFAULT_STAGES],
        [s[2] for s in DEFAULT_STAGES],
    )


async def list_for_account(conn: asyncpg.Connection, account_id: str) -> list[Stage]:
    rows = await conn.fetch(
        "SELECT key, name, position FROM stages WHERE account_id = $1 ORDER BY position, key",
        account_id,
    )
    return [Stage(key=r["key"], name=r["name"], position=r["position"]) for r in rows]
