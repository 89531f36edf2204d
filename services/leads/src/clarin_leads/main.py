"""The leads service: ``create_app()`` and the ``clarin-leads`` entrypoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from clarin_common.app import Resources, create_service_app, serve
from clarin_common.outbox import Outbox
from clarin_common.users import UserDirectory
from clarin_leads.consumers import LeadsConsumer
from clarin_leads.deps import LeadsContext
from clarin_leads.leads.endpoints import router as leads_router
from clarin_leads.pipeline.endpoints import router as pipeline_router
from clarin_leads.settings import LeadsSettings

MIGRATIONS = Path(__file__).parents[2] / "migrations"


def create_app(settings: LeadsSettings | None = None) -> FastAPI:
    settings = settings or LeadsSettings()

    @asynccontextmanager
    async def context(res: Resources) -> AsyncIterator[LeadsContext]:
        assert res.pool is not None and res.js is not None
        async with (
            UserDirectory(settings.auth_url, settings.auth_timeout) as users,
            Outbox(res.pool, res.js, settings.outbox_relay_interval, "leads") as outbox,
        ):
            consumer = LeadsConsumer(
                res.pool,
                res.js,
                outbox,
                settings.consumer_batch_size,
                settings.contact_event_interval_seconds,
            )
            await consumer.start()
            try:
                yield LeadsContext(settings, res.pool, outbox, users, consumer)
            finally:
                await consumer.stop()

    return create_service_app(
        settings,
        title="Clarin leads",
        schema="leads",
        migrations_dir=MIGRATIONS,
        routers=[leads_router, pipeline_router],
        context=context,
    )


def run() -> None:
    settings = LeadsSettings()
    serve(create_app(settings), settings.host, settings.port)
