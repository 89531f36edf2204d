"""Rules of webhooks: where they may point, their secret shown once, the delivery log."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

import asyncpg

from clarin_common.errors import ValidationFailed
from clarin_webhooks.crypto import SecretBox, generate_secret
from clarin_webhooks.delivery.targets import BlockedTarget, TargetPolicy
from clarin_webhooks.webhooks import repository
from clarin_webhooks.webhooks.exceptions import (
    DeliveryInProgress,
    DeliveryNotFound,
    WebhookLimitReached,
    WebhookNotFound,
)
from clarin_webhooks.webhooks.repository import PageKey
from clarin_webhooks.webhooks.schemas import (
    Delivery,
    DeliveryPage,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookUpdate,
)


def _uuid_or(value: str, error: type[Exception]) -> str:
    """Ids are uuids; anything else is simply not found."""
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise error() from exc


def encode_cursor(delivery: Delivery) -> str:
    raw = json.dumps({"c": delivery.created_at.isoformat(), "i": delivery.id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> PageKey:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        created_at = datetime.fromisoformat(data["c"])
        if created_at.tzinfo is None:
            raise ValueError("naive time")
        return PageKey(created_at=created_at, id=str(uuid.UUID(data["i"])))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ValidationFailed.field(["query", "cursor"], "Invalid cursor") from exc


async def _check_target(policy: TargetPolicy, url: str) -> None:
    try:
        await policy.check_url(url)
    except BlockedTarget as exc:
        raise ValidationFailed.field(["body", "url"], str(exc), "url_not_allowed") from exc


async def create_webhook(
    pool: asyncpg.Pool,
    policy: TargetPolicy,
    box: SecretBox,
    account_id: str,
    body: WebhookCreate,
    max_per_account: int,
) -> WebhookCreated:
    await _check_target(policy, body.url)
    secret = body.secret or generate_secret()
    async with pool.acquire() as conn, conn.transaction():
        webhook = await repository.insert_within_limit(
            conn, account_id, body.url, body.events, box.encrypt(secret), max_per_account
        )
    if webhook is None:
        raise WebhookLimitReached(details={"limit": max_per_account})
    return WebhookCreated(**webhook.model_dump(), secret=secret)


async def list_webhooks(pool: asyncpg.Pool, account_id: str) -> list[Webhook]:
    async with pool.acquire() as conn:
        return await repository.list_for_account(conn, account_id)


async def get_webhook(pool: asyncpg.Pool, account_id: str, webhook_id: str) -> Webhook:
    webhook_id = _uuid_or(webhook_id, WebhookNotFound)
    async with pool.acquire() as conn:
        webhook = await repository.get_by_id_for_account(conn, account_id, webhook_id)
    if webhook is None:
        raise WebhookNotFound()
    return webhook


async def update_webhook(
    pool: asyncpg.Pool, policy: TargetPolicy, account_id: str, webhook_id: str, body: WebhookUpdate
) -> Webhook:
    webhook_id = _uuid_or(webhook_id, WebhookNotFound)
    changes = body.model_dump(include=body.model_fields_set)
    current = await get_webhook(pool, account_id, webhook_id)  # 404 before 422
    if "url" in changes and changes["url"] != current.url:
        await _check_target(policy, changes["url"])
    async with pool.acquire() as conn:
        webhook = await repository.update_for_account(conn, account_id, webhook_id, changes)
    if webhook is None:  # deleted meanwhile
        raise WebhookNotFound()
    return webhook


async def delete_webhook(pool: asyncpg.Pool, account_id: str, webhook_id: str) -> None:
    webhook_id = _uuid_or(webhook_id, WebhookNotFound)
    async with pool.acquire() as conn:
        if not await repository.delete_for_account(conn, account_id, webhook_id):
            raise WebhookNotFound()


async def list_deliveries(
    pool: asyncpg.Pool,
    account_id: str,
    webhook_id: str,
    *,
    limit: int,
    cursor: str | None,
    status: str | None,
) -> DeliveryPage:
    after = decode_cursor(cursor) if cursor else None
    webhook = await get_webhook(pool, account_id, webhook_id)
    async with pool.acquire() as conn:
        rows = await repository.list_deliveries_for_account(
            conn, account_id, webhook.id, limit=limit + 1, after=after, status=status
        )
    items = rows[:limit]
    next_cursor = encode_cursor(items[-1]) if len(rows) > limit else None
    return DeliveryPage(items=items, next_cursor=next_cursor)


async def redeliver(
    pool: asyncpg.Pool, account_id: str, webhook_id: str, delivery_id: str, retry_window: float
) -> Delivery:
    """Attempt a delivery again now (whatever its state), with the same delivery id."""
    webhook = await get_webhook(pool, account_id, webhook_id)
    delivery_id = _uuid_or(delivery_id, DeliveryNotFound)
    async with pool.acquire() as conn, conn.transaction():
        delivery = await repository.schedule_again_for_account(
            conn, account_id, webhook.id, delivery_id, retry_window
        )
        if delivery is None:
            if await repository.get_delivery_for_account(conn, account_id, webhook.id, delivery_id):
                raise DeliveryInProgress()
            raise DeliveryNotFound()
    return delivery
