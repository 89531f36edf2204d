"""Counters fed by receipts: messaging's ``message_sent`` and ``message_status``
events (stream ``APP_EVENTS``, durable consumer ``campaigns``) move recipients
forward; the scheduler announces the new counters."""

from __future__ import annotations

import asyncpg
from nats.js import JetStreamContext

from clarin_campaigns.campaigns import repository as repo
from clarin_campaigns.settings import CampaignsSettings
from clarin_common.db import transaction
from clarin_common.events import APP_EVENTS_STREAM
from clarin_common.nats import Delivery, PullConsumer


def outcome(delivery: Delivery) -> tuple[str, str, str | None] | None:
    envelope = delivery.envelope
    data = envelope.data
    if envelope.type == "message_sent":
        message = data.get("message") or {}
        if message.get("id") and message.get("status") in ("sent", "delivered", "read"):
            return str(message["id"]), str(message["status"]), None
        return None
    if envelope.type == "message_status":
        status = data.get("status")
        if data.get("message_id") and status in ("sent", "delivered", "read", "failed"):
            error = "WhatsApp did not take the message" if status == "failed" else None
            return str(data["message_id"]), str(status), error
    return None


def outcomes_consumer(
    pool: asyncpg.Pool, js: JetStreamContext, settings: CampaignsSettings
) -> PullConsumer:
    async def handle(deliveries: list[Delivery]) -> None:
        found = [o for o in map(outcome, deliveries) if o is not None]
        if not found:
            return
        async with transaction(pool) as conn:
            await repo.apply_outcomes(conn, found)

    return PullConsumer(
        js,
        stream=APP_EVENTS_STREAM,
        durable=settings.consumer_durable,
        filter_subjects=["app.*.message_sent", "app.*.message_status"],
        handler=handle,
        batch_size=settings.consumer_batch_size,
    )
