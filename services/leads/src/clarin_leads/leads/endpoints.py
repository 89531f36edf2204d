"""``/api/leads``: parse, call the service, answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from clarin_common.auth import CurrentUser, account_uuid
from clarin_common.contract import Lead
from clarin_common.users import AccountUsersDep
from clarin_leads.deps import LeadsCtx
from clarin_leads.leads import service
from clarin_leads.leads.schemas import LeadCreate, LeadFilters, LeadPage, LeadUpdate

router = APIRouter(prefix="/api/leads", tags=["leads"])


@router.get("")
async def list_leads(
    user: CurrentUser,
    ctx: LeadsCtx,
    users: AccountUsersDep,
    stage: str | None = None,
    tag: str | None = None,
    q: str | None = None,
    assigned_to: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> LeadPage:
    filters = LeadFilters(stage=stage, tag=tag, q=q, assigned_to=assigned_to)
    return await service.list_leads(
        ctx, account_uuid(user), users, filters, limit=limit, cursor=cursor
    )


@router.post("", status_code=201)
async def create_lead(
    body: LeadCreate, user: CurrentUser, ctx: LeadsCtx, users: AccountUsersDep
) -> Lead:
    return await service.create_lead(ctx, account_uuid(user), users, body)


@router.get("/{lead_id}")
async def get_lead(lead_id: str, user: CurrentUser, ctx: LeadsCtx) -> Lead:
    return await service.get_lead(ctx, account_uuid(user), lead_id)


@router.put("/{lead_id}")
async def update_lead(
    lead_id: str, body: LeadUpdate, user: CurrentUser, ctx: LeadsCtx, users: AccountUsersDep
) -> Lead:
    return await service.update_lead(ctx, account_uuid(user), users, lead_id, body)


@router.delete("/{lead_id}", status_code=204)
async def delete_lead(lead_id: str, user: CurrentUser, ctx: LeadsCtx) -> Response:
    await service.delete_lead(ctx, account_uuid(user), lead_id)
    return Response(status_code=204)
