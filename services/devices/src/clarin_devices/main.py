"""The devices API (port 8002): device CRUD and lifecycle. The device workers
(``clarin_devices.worker.main``) hold the WhatsApp sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from clarin_common.app import Resources, create_service_app, serve
from clarin_common.commands import DeviceCommands
from clarin_common.outbox import Outbox
from clarin_devices.deps import DevicesContext
from clarin_devices.devices.endpoints import router as devices_router
from clarin_devices.devices.holders import HolderCheck
from clarin_devices.settings import DevicesSettings

MIGRATIONS_DIR = Path(__file__).parents[2] / "migrations"


def create_app(settings: DevicesSettings | None = None) -> FastAPI:
    settings = settings or DevicesSettings()

    @asynccontextmanager
    async def context(res: Resources) -> AsyncIterator[DevicesContext]:
        assert res.pool is not None and res.nc is not None and res.js is not None
        async with Outbox(res.pool, res.js, settings.outbox_relay_interval, "devices") as outbox:
            commands = DeviceCommands(res.nc, settings.command_timeout_seconds)
            holders = HolderCheck(
                res.pool,
                res.js,
                outbox,
                settings.members_bucket,
                settings.holder_check_interval_seconds,
            )
            holders.start()
            try:
                yield DevicesContext(settings, res.pool, res.nc, outbox, commands, holders)
            finally:
                await holders.stop()

    return create_service_app(
        settings,
        title="Clarin devices",
        schema="devices",
        migrations_dir=MIGRATIONS_DIR,
        routers=[devices_router],
        context=context,
    )


def run() -> None:
    settings = DevicesSettings()
    serve(create_app(settings), settings.host, settings.port)


if __name__ == "__main__":
    run()
