"""The device worker (one shard): ``clarin-device-worker``.

Serves /healthz, /readyz and /metrics on ``WORKER_PORT``; SIGTERM hands every
device over to the other workers before exiting.
"""

from __future__ import annotations

from fastapi import FastAPI

from clarin_common.app import Resources, create_service_app, serve
from clarin_devices.main import MIGRATIONS_DIR
from clarin_devices.settings import WorkerSettings
from clarin_devices.worker.driver_factory import build_driver
from clarin_devices.worker.worker import Worker


def create_app(settings: WorkerSettings | None = None) -> FastAPI:
    settings = settings or WorkerSettings()

    async def on_startup(app: FastAPI, res: Resources) -> None:
        assert res.pool is not None and res.nc is not None
        worker = Worker(settings, res.pool, res.nc, build_driver(settings, res.nc))
        await worker.start()
        app.state.worker = worker
        res.extras["worker"] = worker

    async def on_shutdown(app: FastAPI, res: Resources) -> None:
        worker: Worker | None = res.extras.get("worker")
        if worker is not None:
            await worker.stop()

    return create_service_app(
        settings,
        title="Clarin device worker",
        schema="devices",
        migrations_dir=MIGRATIONS_DIR,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )


def run() -> None:
    settings = WorkerSettings()
    serve(create_app(settings), settings.host, settings.port)


if __name__ == "__main__":
    run()
