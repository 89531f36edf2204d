"""The campaigns service: ``create_app()`` and the ``clarin-campaigns`` entrypoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from clarin_campaigns.campaigns.endpoints import router as campaigns_router
from clarin_campaigns.clients import DevicesClient, LeadsClient
from clarin_campaigns.consumers import outcomes_consumer
from clarin_campaigns.deps import CampaignsContext
from clarin_campaigns.runner import Scheduler
from clarin_campaigns.settings import CampaignsSettings
from clarin_common.app import Resources, create_service_app, serve
from clarin_common.outbox import Outbox

MIGRATIONS = Path(__file__).parents[2] / "migrations"


def create_app(settings: CampaignsSettings | None = None) -> FastAPI:
    settings = settings or CampaignsSettings()

    @asynccontextmanager
    async def context(res: Resources) -> AsyncIterator[CampaignsContext]:
        assert res.pool is not None and res.js is not None and res.nc is not None
        async with (
            LeadsClient(settings.leads_url, settings.upstream_timeout) as leads,
            DevicesClient(settings.devices_url, settings.upstream_timeout) as devices,
            Outbox(res.pool, res.js, settings.outbox_relay_interval, "campaigns") as outbox,
        ):
            consumer = outcomes_consumer(res.pool, res.js, settings)
            scheduler = Scheduler(res.pool, res.nc, outbox, settings)
            await consumer.start()
            await scheduler.start()
            try:
                yield CampaignsContext(settings, res.pool, outbox, leads, devices, scheduler)
            finally:
                await scheduler.stop()
                await consumer.stop()

    return create_service_app(
        settings,
        title="Clarin campaigns",
        schema="campaigns",
        migrations_dir=MIGRATIONS,
        routers=[campaigns_router],
        context=context,
    )


def run() -> None:
    settings = CampaignsSettings()
    serve(create_app(settings), settings.host, settings.port)
