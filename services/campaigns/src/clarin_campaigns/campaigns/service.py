"""The rules of campaigns: audiences, states, and what a start, pause, resume or
cancel does. Sending is the scheduler's (``clarin_campaigns.runner``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from clarin_campaigns.campaigns import repository as repo
from clarin_campaigns.campaigns.exceptions import CampaignNotFound, CampaignState
from clarin_campaigns.campaigns.schemas import (
    OPT_OUT_TAG,
    AudienceIn,
    AudiencePreview,
    CampaignCreate,
    CampaignPage,
    PreviewRecipient,
    RecipientPage,
    SkipReason,
)
from clarin_campaigns.deps import CampaignsContext
from clarin_common.auth import Principal
from clarin_common.contract import Campaign, Lead
from clarin_common.db import transaction
from clarin_common.errors import ValidationFailed
from clarin_common.events import CampaignProgressData
from clarin_common.outbox import app_event, stage_events
from clarin_common.paging import Key, decode_cursor, encode_cursor

SAMPLE = 20


def skip_reason(lead: Lead) -> SkipReason | None:
    if any(tag.casefold() == OPT_OUT_TAG for tag in lead.tags):
        return "opt-out"
    if not lead.phone:
        return "no_phone"
    return None


async def resolve(ctx: CampaignsContext, authorization: str, audience: AudienceIn) -> list[Lead]:
    """The audience's leads as the leads service shows them to the caller."""
    limit = ctx.settings.max_recipients
    if audience.lead_ids is not None:
        if len(audience.lead_ids) > limit:
            raise ValidationFailed.field(["body", "audience", "lead_ids"], f"At most {limit} leads")
        found = [await ctx.leads.lead(lead_id, authorization) for lead_id in audience.lead_ids]
        return [lead for lead in found if lead is not None]
    return await ctx.leads.matching(
        authorization, stage=audience.stage, tag=audience.tag, limit=limit
    )


async def preview(
    ctx: CampaignsContext, authorization: str, audience: AudienceIn
) -> AudiencePreview:
    leads = await resolve(ctx, authorization, audience)
    sample = [
        PreviewRecipient(
            lead_id=lead.id,
            name=lead.name,
            phone=lead.phone,
            skipped=skip_reason(lead),
        )
        for lead in leads
    ]
    skipped = sum(1 for r in sample if r.skipped)
    return AudiencePreview(total=len(leads) - skipped, skipped=skipped, sample=sample[:SAMPLE])


async def create(
    ctx: CampaignsContext, principal: Principal, authorization: str, body: CampaignCreate
) -> Campaign:
    device_id = str(body.device_id)
    if not await ctx.devices.exists(device_id, authorization):
        raise ValidationFailed.field(["body", "device_id"], "No such device in this account")
    leads = await resolve(ctx, authorization, body.audience)
    recipients = []
    for lead in leads:
        reason = skip_reason(lead)
        recipients.append(
            repo.NewRecipient(
                lead_id=lead.id,
                name=lead.name,
                phone=lead.phone,
                status="skipped" if reason else "waiting",
                error=reason,
            )
        )
    campaign_id = str(uuid.uuid4())
    async with transaction(ctx.pool) as conn:
        await repo.insert(
            conn,
            campaign_id,
            principal.account_id,
            principal.user_id,
            body.name.strip(),
            device_id,
            body.body,
            body.audience,
            body.per_minute or ctx.settings.default_per_minute,
            recipients,
        )
        campaign = await repo.get_by_id_for_account(conn, campaign_id, principal.account_id)
    assert campaign is not None
    return campaign


async def get(ctx: CampaignsContext, principal: Principal, campaign_id: str) -> Campaign:
    campaign = await repo.get_by_id_for_account(ctx.pool, campaign_id, principal.account_id)
    if campaign is None:
        raise CampaignNotFound()
    return campaign


async def list_campaigns(
    ctx: CampaignsContext, principal: Principal, limit: int, cursor: str | None
) -> CampaignPage:
    after = None
    if cursor:
        key = decode_cursor(cursor)
        after = (key.at, key.id)
    rows = await repo.list_for_account(ctx.pool, principal.account_id, after, limit + 1)
    items = rows[:limit]
    next_cursor = (
        encode_cursor(Key(at=items[-1].created_at, id=items[-1].id)) if len(rows) > limit else None
    )
    return CampaignPage(items=items, next_cursor=next_cursor)


async def recipients(
    ctx: CampaignsContext,
    principal: Principal,
    campaign_id: str,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> RecipientPage:
    await get(ctx, principal, campaign_id)
    after = None
    if cursor:
        key = decode_cursor(cursor)
        after = int(key.at.timestamp())
    rows = await repo.recipients_page(
        ctx.pool, campaign_id, principal.account_id, status, after, limit + 1
    )
    items = [r for _, r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        position, last = rows[limit - 1]
        next_cursor = encode_cursor(Key(at=datetime.fromtimestamp(position, UTC), id=last.lead_id))
    return RecipientPage(items=items, next_cursor=next_cursor)


_MOVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "start": ("running", ("draft",)),
    "pause": ("paused", ("running",)),
    "resume": ("running", ("paused",)),
    "cancel": ("cancelled", ("draft", "running", "paused")),
}


async def act(
    ctx: CampaignsContext, principal: Principal, campaign_id: str, action: str
) -> Campaign:
    status, from_statuses = _MOVES[action]
    async with transaction(ctx.pool) as conn:
        moved = await repo.set_status(
            conn, campaign_id, principal.account_id, status, from_statuses=from_statuses
        )
        campaign = await repo.get_by_id_for_account(conn, campaign_id, principal.account_id)
        if campaign is None:
            raise CampaignNotFound()
        if not moved:
            raise CampaignState(
                f"A {campaign.status} campaign cannot {action}",
                details={"status": campaign.status, "action": action},
            )
        if action == "cancel":
            await repo.cancel_waiting(conn, campaign_id)
        if action == "start":
            # nobody to write to: done at once
            await repo.finish_if_done(conn, [campaign_id])
        campaign = await repo.get_by_id_for_account(conn, campaign_id, principal.account_id)
        assert campaign is not None
        events = await stage_events(
            conn,
            [
                app_event(
                    principal.account_id,
                    "campaign_progress",
                    CampaignProgressData(campaign=campaign),
                )
            ],
        )
    await ctx.outbox.publish(events)
    return campaign
