"""``/api/leads``: parse, call the service, answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from clarin_common.app import DbPool
from clarin_common.auth import CurrentUser
from clarin_common.contract import Lead
from clarin_leads.accounts import AccountUsersDep, account_uuid
from clarin_leads.leads import service
from clarin_leads.leads.schemas import LeadCreate, LeadFilters, LeadPage, LeadUpdate
from clarin_leads.outbox import Outbox

router = APIRouter(prefix="/api/leads", tags=["leads"])


def _outbox(request: Request) -> Outbox:
    outbox: Outbox = request.app.state.outbox
    return outbox


@router.get("")
async def list_leads(
    user: CurrentUser,
    pool: DbPool,
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
        pool, account_uuid(user), users, filters, limit=limit, cursor=cursor
    )


@router.post("", status_code=201)
async def create_lead(
    body: LeadCreate, user: CurrentUser, pool: DbPool, users: AccountUsersDep, request: Request
) -> Lead:
    return await service.create_lead(pool, _outbox(request), account_uuid(user), users, body)


@router.get("/{lead_id}")
async def get_lead(lead_id: str, user: CurrentUser, pool: DbPool) -> Lead:
    return await service.get_lead(pool, account_uuid(user), lead_id)


@router.put("/{lead_id}")
async def update_lead(
    lead_id: str,
    body: LeadUpdate,
    user: CurrentUser,
    pool: DbPool,
    users: AccountUsersDep,
    request: Request,
) -> Lead:
    return await service.update_lead(
        pool, _outbox(request), account_uuid(user), users, lead_id, body
    )


@router.delete("/{lead_id}", status_code=204)
async def delete_lead(lead_id: str, user: CurrentUser, pool: DbPool, request: Request) -> Response:
    await service.delete_lead(pool, _outbox(request), account_uuid(user), lead_id)
    return Response(status_code=204)
