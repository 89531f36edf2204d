"""The worker with the real neonize driver, offline: a connect through the API fails
to dial WhatsApp, the device shows `error` with a clear `last_error`, and the worker
keeps retrying with backoff; the worker stays alive and answering."""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from typing import Any

from clarin_common import nats as natsmod
from clarin_common.db import create_pool
from clarin_devices.settings import WorkerSettings
from clarin_devices.worker.driver_factory import build_driver
from clarin_devices.worker.worker import Worker
from clarin_devkit.testing.plugin import TestServers

from .conftest import FAST_WORKER


async def test_offline_neonize_connect_errors_clearly_and_is_retried(
    test_servers: TestServers, api: Any, events: Any
) -> None:
    settings = WorkerSettings(
        worker_id=f"neo-{uuid.uuid4().hex[:6]}",
        **{
            **FAST_WORKER,
            "whatsapp_driver": "neonize",
            "reconnect_base_seconds": 0.2,
            "reconnect_max_seconds": 1.0,
        },
    )
    nc = await natsmod.connect(test_servers.nats_url, name=settings.worker_id)
    pool = await create_pool(test_servers.database_url, "devices", min_size=1, max_size=3)
    driver = build_driver(settings, nc)
    attempts: list[float] = []
    real_connect = driver.connect

    async def counting_connect(*args: Any, **kwargs: Any) -> None:
        attempts.append(time.monotonic())
        await real_connect(*args, **kwargs)

    driver.connect = counting_connect  # type: ignore[method-assign]
    worker = Worker(settings, pool, nc, driver)
    await worker.start()
    try:
        device = await api.create("Neonize line")
        started = time.monotonic()
        resp = await api.post(device["id"], "connect")
        assert resp.status_code == 202
        errored = await api.wait_status(device["id"], "error", timeout=60)
        assert "dial" in (errored["last_error"] or ""), errored
        # retried by the worker with backoff (the status stays `error` meanwhile)
        await events.wait(lambda: len(attempts) >= 3, timeout=60)
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert min(gaps) >= 0.1, gaps  # base 0.2 s with jitter in [0.5, 1]
        assert events.app_statuses(device["id"])[-1] == "error"
        assert time.monotonic() - started >= 0.2
        # the worker is alive and still answers its commands subject (no session: 409 path)
        resp = await api.post(device["id"], "pair-phone", json={"phone": "5215512345678"})
        assert resp.status_code in (409, 503), resp.text
        # and disconnecting stops the retries
        assert (await api.post(device["id"], "disconnect")).status_code == 202
        await api.wait_status(device["id"], "disconnected", timeout=30)
    finally:
        with contextlib.suppress(Exception):
            await worker.stop()
        await pool.close()
        await nc.close()
