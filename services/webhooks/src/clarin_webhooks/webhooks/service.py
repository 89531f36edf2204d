"""Rules of webhooks: where they may point, their secret shown once, the delivery log."""

from __future__ import annotations

from clarin_common.db import transaction
from clarin_common.errors import ValidationFailed
from clarin_common.ids import uuid_or
from clarin_common.paging import Key, decode_cursor, page
from clarin_webhooks.crypto import generate_secret
from clarin_webhooks.delivery.targets import BlockedTarget, TargetPolicy
from clarin_webhooks.deps import WebhooksContext
from clarin_webhooks.webhooks import repository
from clarin_webhooks.webhooks.exceptions import (
    DeliveryInProgress,
    DeliveryNotFound,
    WebhookLimitReached,
    WebhookNotFound,
)
from clarin_webhooks.webhooks.schemas import (
    Delivery,
    DeliveryPage,
    DeliveryStatus,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookUpdate,
)


def _page_key(delivery: Delivery) -> Key:
    return Key(at=delivery.created_at, id=delivery.id)


async def _check_target(policy: TargetPolicy, url: str) -> None:
    try:
        await policy.check_url(url)
    except BlockedTarget as exc:
        raise ValidationFailed.field(["body", "url"], str(exc), "url_not_allowed") from exc


async def create_webhook(
    ctx: WebhooksContext, account_id: str, body: WebhookCreate
) -> WebhookCreated:
    await _check_target(ctx.policy, body.url)
    secret = body.secret or generate_secret()
    limit = ctx.settings.max_per_account
    async with transaction(ctx.pool) as conn:
        webhook = await repository.insert_within_limit(
            conn, account_id, body.url, body.events, ctx.box.encrypt(secret), limit
        )
    if webhook is None:
        raise WebhookLimitReached(details={"limit": limit})
    return WebhookCreated(**webhook.model_dump(), secret=secret)


async def list_webhooks(ctx: WebhooksContext, account_id: str) -> list[Webhook]:
    return await repository.list_for_account(ctx.pool, account_id)


async def get_webhook(ctx: WebhooksContext, account_id: str, webhook_id: str) -> Webhook:
    webhook = await repository.get_by_id_for_account(
        ctx.pool, uuid_or(webhook_id, WebhookNotFound), account_id
    )
    if webhook is None:
        raise WebhookNotFound()
    return webhook


async def update_webhook(
    ctx: WebhooksContext, account_id: str, webhook_id: str, body: WebhookUpdate
) -> Webhook:
    changes = body.model_dump(include=body.model_fields_set)
    current = await get_webhook(ctx, account_id, webhook_id)  # 404 before 422
    if "url" in changes and changes["url"] != current.url:
        await _check_target(ctx.policy, changes["url"])
    webhook = await repository.update_for_account(ctx.pool, current.id, account_id, changes)
    if webhook is None:  # deleted meanwhile
        raise WebhookNotFound()
    return webhook


async def delete_webhook(ctx: WebhooksContext, account_id: str, webhook_id: str) -> None:
    webhook_id = uuid_or(webhook_id, WebhookNotFound)
    if not await repository.delete_for_account(ctx.pool, webhook_id, account_id):
        raise WebhookNotFound()


async def list_deliveries(
    ctx: WebhooksContext,
    account_id: str,
    webhook_id: str,
    *,
    limit: int,
    cursor: str | None,
    status: DeliveryStatus | None,
) -> DeliveryPage:
    after = decode_cursor(cursor) if cursor else None
    webhook = await get_webhook(ctx, account_id, webhook_id)
    rows = await repository.list_deliveries_for_account(
        ctx.pool, webhook.id, account_id, limit=limit + 1, after=after, status=status
    )
    items, next_cursor = page(rows, limit, _page_key)
    return DeliveryPage(items=items, next_cursor=next_cursor)


async def redeliver(
    ctx: WebhooksContext, account_id: str, webhook_id: str, delivery_id: str
) -> Delivery:
    """Attempt a delivery again now (whatever its state), with the same delivery id."""
    webhook = await get_webhook(ctx, account_id, webhook_id)
    delivery_id = uuid_or(delivery_id, DeliveryNotFound)
    async with transaction(ctx.pool) as conn:
        delivery = await repository.schedule_again_for_account(
            conn, delivery_id, webhook.id, account_id, ctx.settings.retry_window_seconds
        )
        if delivery is None:
            if await repository.get_delivery_for_account(conn, delivery_id, webhook.id, account_id):
                raise DeliveryInProgress()
            raise DeliveryNotFound()
    ctx.dispatcher.wake()  # after the commit: the claim loop finds it due
    return delivery
