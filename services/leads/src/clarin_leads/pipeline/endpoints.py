"""``/api/pipeline``."""

from __future__ import annotations

from fastapi import APIRouter

from clarin_common.auth import CurrentUser, account_uuid
from clarin_leads.deps import LeadsCtx
from clarin_leads.pipeline import service
from clarin_leads.pipeline.schemas import StageList

router = APIRouter(prefix="/api/pipeline", tags=["pipeline"])


@router.get("/stages")
async def list_stages(user: CurrentUser, ctx: LeadsCtx) -> StageList:
    return StageList(items=await service.list_stages(ctx, account_uuid(user)))
