"""``/api/pipeline``."""

from __future__ import annotations

from fastapi import APIRouter

from clarin_common.app import DbPool
from clarin_common.auth import CurrentUser
from clarin_leads.accounts import account_uuid
from clarin_leads.pipeline import service
from clarin_leads.pipeline.schemas import StageList

router = APIRouter(prefix="/api/pipeline", tags=["pipeline"])


@router.get("/stages")
async def list_stages(user: CurrentUser, pool: DbPool) -> StageList:
    async with pool.acquire() as conn:
        stages = await service.stages_for_account(conn, account_uuid(user))
    return StageList(items=stages)
