"""The devices API (port 8002): device CRUD and lifecycle. The device workers
(``clarin_devices.worker.main``) hold the WhatsApp sessions."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from clarin_common.app import create_service_app, serve
from clarin_devices.devices.endpoints import router as devices_router
from clarin_devices.settings import DevicesSettings

MIGRATIONS_DIR = Path(__file__).parents[2] / "migrations"


def create_app(settings: DevicesSettings | None = None) -> FastAPI:
    settings = settings or DevicesSettings()
    return create_service_app(
        settings,
        title="Clarin devices",
        schema="devices",
        migrations_dir=MIGRATIONS_DIR,
        routers=[devices_router],
    )


def run() -> None:
    settings = DevicesSettings()
    serve(create_app(settings), settings.host, settings.port)


if __name__ == "__main__":
    run()
