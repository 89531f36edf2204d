"""``/api/webhooks``: parse, call the service, answer. Admin only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from clarin_common.auth import AdminUser, account_uuid
from clarin_webhooks.deps import WebhooksCtx
from clarin_webhooks.webhooks import service
from clarin_webhooks.webhooks.schemas import (
    EVENT_TYPES,
    Delivery,
    DeliveryPage,
    DeliveryStatus,
    EventTypeList,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookUpdate,
)

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])


@router.get("/event-types")
async def event_types(user: AdminUser) -> EventTypeList:
    """The event types a webhook may subscribe to (besides ``*``)."""
    return EventTypeList(items=list(EVENT_TYPES))


@router.get("")
async def list_webhooks(user: AdminUser, ctx: WebhooksCtx) -> WebhookList:
    return WebhookList(items=await service.list_webhooks(ctx, account_uuid(user)))


@router.post("", status_code=201)
async def create_webhook(body: WebhookCreate, user: AdminUser, ctx: WebhooksCtx) -> WebhookCreated:
    """A new webhook; the answer carries its signing ``secret``, shown this once."""
    return await service.create_webhook(ctx, account_uuid(user), body)


@router.get("/{webhook_id}")
async def get_webhook(webhook_id: str, user: AdminUser, ctx: WebhooksCtx) -> Webhook:
    return await service.get_webhook(ctx, account_uuid(user), webhook_id)


@router.patch("/{webhook_id}")
async def update_webhook(
    webhook_id: str, body: WebhookUpdate, user: AdminUser, ctx: WebhooksCtx
) -> Webhook:
    return await service.update_webhook(ctx, account_uuid(user), webhook_id, body)


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: str, user: AdminUser, ctx: WebhooksCtx) -> Response:
    await service.delete_webhook(ctx, account_uuid(user), webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries")
async def list_deliveries(
    webhook_id: str,
    user: AdminUser,
    ctx: WebhooksCtx,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    status: DeliveryStatus | None = None,
) -> DeliveryPage:
    """The webhook's deliveries, newest first."""
    return await service.list_deliveries(
        ctx, account_uuid(user), webhook_id, limit=limit, cursor=cursor, status=status
    )


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=202)
async def redeliver(
    webhook_id: str, delivery_id: str, user: AdminUser, ctx: WebhooksCtx
) -> Delivery:
    """Attempt the delivery again now, with the same ``X-Clarin-Delivery`` id."""
    return await service.redeliver(ctx, account_uuid(user), webhook_id, delivery_id)
