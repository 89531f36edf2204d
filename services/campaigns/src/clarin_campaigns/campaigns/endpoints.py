"""``/api/campaigns``: admin only; parse, call the service, answer."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from clarin_campaigns.campaigns import service
from clarin_campaigns.campaigns.schemas import (
    AudiencePreview,
    AudienceQuery,
    CampaignCreate,
    CampaignPage,
    RecipientPage,
    RecipientStatus,
)
from clarin_campaigns.deps import CampaignsCtx
from clarin_common.auth import AdminUser
from clarin_common.contract import Campaign

router = APIRouter(prefix="/api/campaigns", tags=["campaigns"])


def _authorization(request: Request) -> str:
    return request.headers.get("authorization", "")


@router.get("")
async def list_campaigns(
    user: AdminUser,
    ctx: CampaignsCtx,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> CampaignPage:
    return await service.list_campaigns(ctx, user, limit, cursor)


@router.post("", status_code=201)
async def create_campaign(
    body: CampaignCreate, request: Request, user: AdminUser, ctx: CampaignsCtx
) -> Campaign:
    return await service.create(ctx, user, _authorization(request), body)


@router.post("/audience")
async def preview_audience(
    body: AudienceQuery, request: Request, user: AdminUser, ctx: CampaignsCtx
) -> AudiencePreview:
    return await service.preview(ctx, _authorization(request), body.audience)


@router.get("/{campaign_id}")
async def get_campaign(campaign_id: uuid.UUID, user: AdminUser, ctx: CampaignsCtx) -> Campaign:
    return await service.get(ctx, user, str(campaign_id))


@router.get("/{campaign_id}/recipients")
async def list_recipients(
    campaign_id: uuid.UUID,
    user: AdminUser,
    ctx: CampaignsCtx,
    status: RecipientStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
) -> RecipientPage:
    return await service.recipients(ctx, user, str(campaign_id), status, limit, cursor)


Action = Literal["start", "pause", "resume", "cancel"]


async def _act(
    campaign_id: uuid.UUID, user: AdminUser, ctx: CampaignsCtx, action: Action
) -> Campaign:
    return await service.act(ctx, user, str(campaign_id), action)


@router.post("/{campaign_id}/start", status_code=202)
async def start_campaign(campaign_id: uuid.UUID, user: AdminUser, ctx: CampaignsCtx) -> Campaign:
    return await _act(campaign_id, user, ctx, "start")


@router.post("/{campaign_id}/pause", status_code=202)
async def pause_campaign(campaign_id: uuid.UUID, user: AdminUser, ctx: CampaignsCtx) -> Campaign:
    return await _act(campaign_id, user, ctx, "pause")


@router.post("/{campaign_id}/resume", status_code=202)
async def resume_campaign(campaign_id: uuid.UUID, user: AdminUser, ctx: CampaignsCtx) -> Campaign:
    return await _act(campaign_id, user, ctx, "resume")


@router.post("/{campaign_id}/cancel", status_code=202)
async def cancel_campaign(campaign_id: uuid.UUID, user: AdminUser, ctx: CampaignsCtx) -> Campaign:
    return await _act(campaign_id, user, ctx, "cancel")
