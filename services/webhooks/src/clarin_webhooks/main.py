"""The webhooks service: ``create_app()`` and the ``clarin-webhooks`` entrypoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from clarin_common.app import Resources, create_service_app, serve
from clarin_webhooks.crypto import SecretBox
from clarin_webhooks.delivery.consumer import EventConsumer
from clarin_webhooks.delivery.dispatcher import Dispatcher
from clarin_webhooks.delivery.targets import Resolver, TargetPolicy, guarded_session
from clarin_webhooks.deps import WebhooksContext
from clarin_webhooks.settings import WebhooksSettings
from clarin_webhooks.webhooks.endpoints import router as webhooks_router

MIGRATIONS = Path(__file__).parents[2] / "migrations"


def create_app(
    settings: WebhooksSettings | None = None, resolver: Resolver | None = None
) -> FastAPI:
    """The app; ``resolver`` replaces the system's DNS lookups (tests)."""
    settings = settings or WebhooksSettings()

    @asynccontextmanager
    async def context(res: Resources) -> AsyncIterator[WebhooksContext]:
        assert res.pool is not None and res.js is not None
        box = SecretBox(settings.secret_key)
        policy = (
            TargetPolicy(settings.private_targets_allowed, resolver)
            if resolver is not None
            else TargetPolicy(settings.private_targets_allowed)
        )
        async with guarded_session(policy, settings.max_in_flight) as http:
            dispatcher = Dispatcher(res.pool, http, box, settings)
            consumer = EventConsumer(
                res.pool,
                res.js,
                retry_window=settings.retry_window_seconds,
                new_deliveries=dispatcher,
                batch_size=settings.consumer_batch_size,
            )
            dispatcher.start()
            try:
                await consumer.start()
                try:
                    yield WebhooksContext(settings, res.pool, policy, box, dispatcher, consumer)
                finally:
                    await consumer.stop()
            finally:
                await dispatcher.stop()

    return create_service_app(
        settings,
        title="Clarin webhooks",
        schema="webhooks",
        migrations_dir=MIGRATIONS,
        routers=[webhooks_router],
        context=context,
    )


def run() -> None:
    settings = WebhooksSettings()
    serve(create_app(settings), settings.host, settings.port)
