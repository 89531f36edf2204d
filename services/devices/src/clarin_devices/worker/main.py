"""The device worker (one shard): ``clarin-device-worker``.

Serves /healthz, /readyz and /metrics on ``WORKER_PORT``; SIGTERM hands every
device over to the other workers before exiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from clarin_common.app import Resources, create_service_app, serve
from clarin_devices.main import MIGRATIONS_DIR
from clarin_devices.settings import WorkerSettings
from clarin_devices.worker.driver_factory import build_driver
from clarin_devices.worker.worker import Worker


def create_app(settings: WorkerSettings | None = None) -> FastAPI:
    """The worker's app. Its context is the :class:`Worker` itself (it has no
    endpoints to hand it to): started once the pool and NATS are open, stopped
    (every device handed over) before they close; tests reach it with
    ``service_context(app, Worker)``."""
    settings = settings or WorkerSettings()

    @asynccontextmanager
    async def context(res: Resources) -> AsyncIterator[Worker]:
        assert res.pool is not None and res.nc is not None
        worker = Worker(settings, res.pool, res.nc, build_driver(settings, res.nc))
        await worker.start()
        try:
            yield worker
        finally:
            await worker.stop()

    return create_service_app(
        settings,
        title="Clarin device worker",
        schema="devices",
        migrations_dir=MIGRATIONS_DIR,
        context=context,
    )


def run() -> None:
    settings = WorkerSettings()
    serve(create_app(settings), settings.host, settings.port)


if __name__ == "__main__":
    run()
