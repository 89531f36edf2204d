"""Rules of the pipeline: every account starts with the default stages."""

from __future__ import annotations

import asyncpg

from clarin_leads.deps import LeadsContext
from clarin_leads.pipeline import repository
from clarin_leads.pipeline.schemas import Stage


async def stages_for_account(conn: asyncpg.Connection, account_id: str) -> list[Stage]:
    stages = await repository.list_for_account(conn, account_id)
    if stages:
        return stages
    await repository.ensure_defaults_for_account(conn, account_id)
    return await repository.list_for_account(conn, account_id)


async def list_stages(ctx: LeadsContext, account_id: str) -> list[Stage]:
    async with ctx.pool.acquire() as conn:
        return await stages_for_account(conn, account_id)
