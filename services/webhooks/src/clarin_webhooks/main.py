"""The webhooks service: ``create_app()`` and the ``clarin-webhooks`` entrypoint."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from fastapi import FastAPI

from clarin_common.app import Resources, create_service_app, serve
from clarin_webhooks.crypto import SecretBox
from clarin_webhooks.delivery.consumer import EventConsumer
from clarin_webhooks.delivery.dispatcher import Dispatcher
from clarin_webhooks.delivery.targets import Resolver, TargetPolicy, guarded_session
from clarin_webhooks.settings import WebhooksSettings
from clarin_webhooks.webhooks.endpoints import router as webhooks_router

MIGRATIONS = Path(__file__).parents[2] / "migrations"


def create_app(
    settings: WebhooksSettings | None = None, resolver: Resolver | None = None
) -> FastAPI:
    """The app; ``resolver`` replaces the system's DNS lookups (tests)."""
    settings = settings or WebhooksSettings()
    box = SecretBox(settings.secret_key)
    policy = (
        TargetPolicy(settings.private_targets_allowed, resolver)
        if resolver is not None
        else TargetPolicy(settings.private_targets_allowed)
    )

    async def on_startup(app: FastAPI, res: Resources) -> None:
        assert res.pool is not None and res.js is not None
        client = guarded_session(policy, settings.max_in_flight)
        res.extras["http"] = client
        dispatcher = Dispatcher(res.pool, client, box, settings)
        app.state.dispatcher = dispatcher
        consumer = EventConsumer(
            res.pool,
            res.js,
            retry_window=settings.retry_window_seconds,
            new_deliveries=dispatcher,
            batch_size=settings.consumer_batch_size,
        )
        res.extras["consumer"] = consumer
        dispatcher.start()
        await consumer.start()

    async def on_shutdown(app: FastAPI, res: Resources) -> None:
        consumer: EventConsumer | None = res.extras.get("consumer")
        if consumer is not None:
            await consumer.stop()
        dispatcher: Dispatcher | None = getattr(app.state, "dispatcher", None)
        if dispatcher is not None:
            await dispatcher.stop()
        client: aiohttp.ClientSession | None = res.extras.get("http")
        if client is not None:
            await client.close()

    app = create_service_app(
        settings,
        title="Clarin webhooks",
        schema="webhooks",
        migrations_dir=MIGRATIONS,
        routers=[webhooks_router],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )
    app.state.target_policy = policy
    app.state.secret_box = box
    return app


def run() -> None:
    settings = WebhooksSettings()
    serve(create_app(settings), settings.host, settings.port)
