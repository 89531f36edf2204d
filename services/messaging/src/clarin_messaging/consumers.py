"""The JetStream consumers of the messaging service, started by the lifespan."""

from __future__ import annotations

import structlog

from clarin_common.events import APP_EVENTS_STREAM, WA_EVENTS_STREAM
from clarin_common.nats import Delivery, PullConsumer
from clarin_messaging.deps import MessagingContext
from clarin_messaging.ingest.history import handle_history_events
from clarin_messaging.ingest.leads import handle_lead_events
from clarin_messaging.ingest.service import handle_wa_events

WA_FILTERS = [
    "wa.evt.*.*.message",
    "wa.evt.*.*.receipt",
    "wa.evt.*.*.sent",
    "wa.evt.*.*.media",
    "wa.evt.*.*.edit",
    "wa.evt.*.*.revoke",
    "wa.evt.*.*.reaction",
    "wa.evt.*.*.presence",
]
# history has a consumer of its own: a long import never holds back live messages
HISTORY_FILTERS = ["wa.evt.*.*.history"]
LEAD_FILTERS = ["app.*.lead_created", "app.*.lead_updated", "app.*.lead_deleted"]


log = structlog.get_logger(__name__)


def wa_events_consumer(ctx: MessagingContext, *, durable: str | None = None) -> PullConsumer:
    settings = ctx.settings

    async def handler(deliveries: list[Delivery]) -> None:
        await handle_wa_events(ctx, deliveries, ctx.db_turn)

    return PullConsumer(
        ctx.js,
        stream=WA_EVENTS_STREAM,
        durable=durable or settings.consumer_durable,
        filter_subjects=WA_FILTERS,
        handler=handler,
        batch_size=settings.consumer_batch_size,
        fetch_timeout=settings.consumer_fetch_timeout,
        ack_wait=settings.consumer_ack_wait,
        overlap=settings.consumer_overlap,
    )


def lead_events_consumer(ctx: MessagingContext) -> PullConsumer:
    settings = ctx.settings

    async def handler(deliveries: list[Delivery]) -> None:
        await handle_lead_events(ctx, deliveries)

    return PullConsumer(
        ctx.js,
        stream=APP_EVENTS_STREAM,
        durable=settings.leads_consumer_durable,
        filter_subjects=LEAD_FILTERS,
        handler=handler,
        batch_size=200,
        fetch_timeout=settings.consumer_fetch_timeout,
        ack_wait=settings.consumer_ack_wait,
    )


def history_events_consumer(ctx: MessagingContext) -> PullConsumer:
    settings = ctx.settings

    async def handler(deliveries: list[Delivery]) -> None:
        await handle_history_events(ctx, deliveries)

    return PullConsumer(
        ctx.js,
        stream=WA_EVENTS_STREAM,
        durable=settings.history_consumer_durable,
        filter_subjects=HISTORY_FILTERS,
        handler=handler,
        batch_size=settings.history_batch_parts,
        fetch_timeout=settings.consumer_fetch_timeout,
        ack_wait=settings.consumer_ack_wait,
    )
