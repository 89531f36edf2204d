"""Rules of leads: validation against the account's stages and users, uniqueness
of a phone per account, application events after commit."""

from __future__ import annotations

import uuid
from typing import Any, NoReturn

import asyncpg

from clarin_common.contract import Lead
from clarin_common.errors import ValidationFailed
from clarin_common.events import LeadData, LeadDeletedData
from clarin_common.ids import phone_digits
from clarin_common.outbox import app_event, stage_events
from clarin_common.paging import Key, decode_cursor, page
from clarin_common.users import AccountUsers
from clarin_leads.deps import LeadsContext
from clarin_leads.leads import repository
from clarin_leads.leads.exceptions import LeadNotFound, PhoneTaken
from clarin_leads.leads.repository import PHONE_UNIQUE
from clarin_leads.leads.schemas import LeadCreate, LeadFilters, LeadPage, LeadUpdate
from clarin_leads.pipeline.service import stages_for_account

DEFAULT_STAGE = "new"


def _page_key(lead: Lead) -> Key:
    return Key(at=lead.created_at, id=lead.id)


def _lead_uuid(lead_id: str) -> str:
    """Lead ids are uuids; anything else is simply not found."""
    try:
        return str(uuid.UUID(lead_id))
    except ValueError as exc:
        raise LeadNotFound() from exc


# ---- validation that needs the account ---------------------------------------------


async def _check_stage(
    conn: asyncpg.Connection, account_id: str, stage: str, loc: list[str | int]
) -> str:
    stages = await stages_for_account(conn, account_id)
    if stage not in {s.key for s in stages}:
        keys = ", ".join(s.key for s in stages)
        raise ValidationFailed.field(loc, f"Unknown stage {stage!r}; one of: {keys}")
    return stage


async def _check_assignee(users: AccountUsers, user_id: str, loc: list[str | int]) -> str:
    if not await users.is_member(user_id):
        raise ValidationFailed.field(loc, "Not a user of this account")
    return str(uuid.UUID(user_id))


def _raise_phone_taken(exc: asyncpg.UniqueViolationError) -> NoReturn:
    if exc.constraint_name == PHONE_UNIQUE:
        raise PhoneTaken() from exc
    raise exc


# ---- use cases ----------------------------------------------------------------------


async def list_leads(
    ctx: LeadsContext,
    account_id: str,
    users: AccountUsers,
    filters: LeadFilters,
    *,
    limit: int,
    cursor: str | None,
) -> LeadPage:
    after = decode_cursor(cursor) if cursor else None
    q = filters.q.strip() if filters.q else None
    tag = filters.tag.strip() if filters.tag else None
    assigned_to = None
    if filters.assigned_to:
        assigned_to = await _check_assignee(users, filters.assigned_to, ["query", "assigned_to"])
    async with ctx.pool.acquire() as conn:
        stage = None
        if filters.stage:
            stage = await _check_stage(conn, account_id, filters.stage.strip(), ["query", "stage"])
        rows = await repository.list_for_account(
            conn,
            account_id,
            LeadFilters(stage=stage, tag=tag or None, q=q or None, assigned_to=assigned_to),
            limit=limit + 1,
            after=after,
            phone_query=phone_digits(q) if q else None,
        )
    items, next_cursor = page(rows, limit, _page_key)
    return LeadPage(items=items, next_cursor=next_cursor)


async def get_lead(ctx: LeadsContext, account_id: str, lead_id: str) -> Lead:
    async with ctx.pool.acquire() as conn:
        lead = await repository.get_by_id_for_account(conn, _lead_uuid(lead_id), account_id)
    if lead is None:
        raise LeadNotFound()
    return lead


async def create_lead(
    ctx: LeadsContext, account_id: str, users: AccountUsers, body: LeadCreate
) -> Lead:
    values: dict[str, Any] = body.model_dump()
    values["tags"] = values["tags"] or []
    if body.assigned_to is not None:
        values["assigned_to"] = await _check_assignee(
            users, body.assigned_to, ["body", "assigned_to"]
        )
    stage = (body.stage or "").strip() or DEFAULT_STAGE
    async with ctx.pool.acquire() as conn, conn.transaction():
        values["stage"] = await _check_stage(conn, account_id, stage, ["body", "stage"])
        try:
            lead = await repository.insert(conn, account_id, values)
        except asyncpg.UniqueViolationError as exc:
            _raise_phone_taken(exc)
        events = await stage_events(
            conn, [app_event(account_id, "lead_created", LeadData(lead=lead))]
        )
    await ctx.outbox.publish(events)
    return lead


async def update_lead(
    ctx: LeadsContext,
    account_id: str,
    users: AccountUsers,
    lead_id: str,
    body: LeadUpdate,
) -> Lead:
    lead_id = _lead_uuid(lead_id)
    changes = body.changes()
    current = await get_lead(ctx, account_id, lead_id)
    if not changes:
        return current
    new_assignee = body.assigned_to if "assigned_to" in changes else None
    if new_assignee is not None and new_assignee != current.assigned_to:
        # only a change of assignee asks auth: saving an unchanged form never fails on it
        changes["assigned_to"] = await _check_assignee(users, new_assignee, ["body", "assigned_to"])
    async with ctx.pool.acquire() as conn, conn.transaction():
        if body.stage is not None:
            await _check_stage(conn, account_id, body.stage, ["body", "stage"])
        try:
            lead = await repository.update_for_account(conn, lead_id, account_id, changes)
        except asyncpg.UniqueViolationError as exc:
            _raise_phone_taken(exc)
        if lead is None:  # deleted meanwhile
            raise LeadNotFound()
        events = await stage_events(
            conn, [app_event(account_id, "lead_updated", LeadData(lead=lead))]
        )
    await ctx.outbox.publish(events)
    return lead


async def delete_lead(ctx: LeadsContext, account_id: str, lead_id: str) -> None:
    lead_id = _lead_uuid(lead_id)
    async with ctx.pool.acquire() as conn, conn.transaction():
        if not await repository.delete_for_account(conn, lead_id, account_id):
            raise LeadNotFound()
        events = await stage_events(
            conn, [app_event(account_id, "lead_deleted", LeadDeletedData(lead_id=lead_id))]
        )
    await ctx.outbox.publish(events)
