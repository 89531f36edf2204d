"""The leads service: ``create_app()`` and the ``clarin-leads`` entrypoint."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from clarin_common.app import Resources, create_service_app, serve
from clarin_leads.accounts import UserDirectory
from clarin_leads.consumers import LeadsConsumer
from clarin_leads.leads.endpoints import router as leads_router
from clarin_leads.outbox import Outbox
from clarin_leads.pipeline.endpoints import router as pipeline_router
from clarin_leads.settings import LeadsSettings

MIGRATIONS = Path(__file__).parents[2] / "migrations"


def create_app(settings: LeadsSettings | None = None) -> FastAPI:
    settings = settings or LeadsSettings()

    async def on_startup(app: FastAPI, res: Resources) -> None:
        assert res.pool is not None and res.js is not None
        app.state.user_directory = UserDirectory(settings.auth_url, settings.auth_timeout)
        outbox = Outbox(res.pool, res.js, settings.outbox_relay_interval)
        app.state.outbox = outbox
        consumer = LeadsConsumer(
            res.pool,
            res.js,
            outbox,
            settings.consumer_batch_size,
            settings.contact_event_interval_seconds,
        )
        res.extras["consumer"] = consumer
        await consumer.start()
        outbox.start()

    async def on_shutdown(app: FastAPI, res: Resources) -> None:
        consumer: LeadsConsumer | None = res.extras.get("consumer")
        if consumer is not None:
            await consumer.stop()
        outbox: Outbox | None = getattr(app.state, "outbox", None)
        if outbox is not None:
            await outbox.stop()
        directory: UserDirectory | None = getattr(app.state, "user_directory", None)
        if directory is not None:
            await directory.close()

    return create_service_app(
        settings,
        title="Clarin leads",
        schema="leads",
        migrations_dir=MIGRATIONS,
        routers=[leads_router, pipeline_router],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )


def run() -> None:
    settings = LeadsSettings()
    serve(create_app(settings), settings.host, settings.port)
