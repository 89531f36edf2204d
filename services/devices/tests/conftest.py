from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from clarin_common import nats as natsmod
from clarin_common.db import create_pool
from clarin_devices.main import create_app
from clarin_devices.settings import DevicesSettings, WorkerSettings
from clarin_devices.worker.drivers.simulator import SimulatorConfig
from clarin_devices.worker.worker import Worker
from clarin_devkit.testing import free_port, running_app
from clarin_devkit.testing.plugin import TestServers
from services.devices.tests.helpers import (
    FAST_WORKER,
    Api,
    EventLog,
    Ledger,
    MakePaired,
    RecordingSimulator,
    Refusing,
    RunningWorker,
    Seen,
    SimRequest,
    SpawnWorker,
    StartWorker,
    WorkerProcess,
)


@pytest.fixture(scope="session")
def refusing() -> Iterator[Refusing]:
    port = Refusing()
    yield port
    port.close()


@pytest.fixture(scope="session")
async def devices_app(test_servers: TestServers) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        DevicesSettings(command_timeout_seconds=3, db_pool_max=4, holder_check_interval_seconds=0.2)
    )
    async with running_app(app) as client:
        yield client


@pytest.fixture
async def client(devices_app: httpx.AsyncClient, clean_state: None) -> httpx.AsyncClient:
    return devices_app


@pytest.fixture
async def db(test_servers: TestServers) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(test_servers.database_url, "devices", min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def events(nats_client: NatsClient, clean_state: None) -> AsyncIterator[EventLog]:
    log = EventLog()
    loop = asyncio.get_running_loop()

    async def collect(msg: Msg) -> None:
        log.items.append(
            Seen(msg.subject, json.loads(msg.data), dict(msg.headers or {}), loop.time())
        )

    subs = [
        await nats_client.subscribe("wa.evt.>", cb=collect),
        await nats_client.subscribe("app.>", cb=collect),
    ]
    await nats_client.flush()
    yield log
    for sub in subs:
        await sub.unsubscribe()


async def paired_devices(api: Api, db: asyncpg.Pool, count: int) -> list[str]:
    """Devices linked earlier (a stored session): connecting them needs no QR."""
    ids = []
    for i in range(count):
        device = await api.create(f"line {i}")
        phone = f"52155{i:08d}"
        await db.execute(
            "UPDATE devices SET jid = $2, phone = $3 WHERE id = $1",
            uuid.UUID(device["id"]),
            f"{phone}@s.whatsapp.net",
            phone,
        )
        ids.append(device["id"])
    return ids


@pytest.fixture
def make_paired(api: Api, db: asyncpg.Pool) -> MakePaired:
    async def make(count: int) -> list[str]:
        return await paired_devices(api, db, count)

    return make


@pytest.fixture
def api(client: httpx.AsyncClient) -> Api:
    return Api(client)


@pytest.fixture
def other_api(client: httpx.AsyncClient) -> Api:
    return Api(client)


async def sim(
    nc: NatsClient, device_id: str, action: str, timeout: float = 3.0, **payload: Any
) -> dict[str, Any]:
    reply = await nc.request(
        f"sim.{device_id}.{action}", json.dumps(payload).encode(), timeout=timeout
    )
    return dict(json.loads(reply.data))


@pytest.fixture
def sim_request(nats_client: NatsClient) -> SimRequest:
    async def request(device_id: str, action: str, **payload: Any) -> dict[str, Any]:
        return await sim(nats_client, device_id, action, **payload)

    return request


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
async def start_worker(
    test_servers: TestServers, devices_app: httpx.AsyncClient, ledger: Ledger
) -> AsyncIterator[StartWorker]:
    """Start in-process workers (each with its own NATS connection and pool)."""
    running: list[RunningWorker] = []

    async def start(worker_id: str | None = None, **overrides: Any) -> RunningWorker:
        settings = WorkerSettings(
            worker_id=worker_id or f"w-{uuid.uuid4().hex[:6]}", **{**FAST_WORKER, **overrides}
        )
        nc = await natsmod.connect(test_servers.nats_url, name=settings.worker_id)
        pool = await create_pool(test_servers.database_url, "devices", min_size=1, max_size=3)
        driver = RecordingSimulator(
            nc,
            SimulatorConfig(
                qr_first_delay=settings.sim_qr_first_delay,
                qr_interval=settings.sim_qr_interval,
                qr_max_codes=settings.sim_qr_max_codes,
                receipt_delay=settings.sim_receipt_delay,
                read_delay=settings.sim_read_delay,
                media_max_bytes=settings.media_max_bytes,
                download_timeout=settings.media_download_timeout_seconds,
            ),
            settings.worker_id,
            ledger,
        )
        worker = Worker(settings, pool, nc, driver)
        await worker.start()
        handle = RunningWorker(worker, driver, nc, pool)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        with contextlib.suppress(Exception):
            await handle.stop()
    assert not ledger.violations, ledger.violations


@pytest.fixture
async def spawn_worker(
    test_servers: TestServers, devices_app: httpx.AsyncClient
) -> AsyncIterator[SpawnWorker]:
    """Start real worker processes (python -m clarin_devices.worker.main)."""
    procs: list[WorkerProcess] = []

    async def spawn(worker_id: str, **overrides: Any) -> WorkerProcess:
        port = free_port()
        env = dict(os.environ)
        env.update({f"WORKER_{k.upper()}": str(v) for k, v in {**FAST_WORKER, **overrides}.items()})
        env.update(
            {
                "WORKER_ID": worker_id,
                "WORKER_PORT": str(port),
                "WORKER_DB_POOL_MAX": "3",
                "CLARIN_LOG_LEVEL": "WARNING",
            }
        )
        process = subprocess.Popen(  # noqa: ASYNC220 - a real worker process
            [sys.executable, "-m", "clarin_devices.worker.main"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=None,
        )
        handle = WorkerProcess(worker_id, process, port)
        procs.append(handle)
        async with httpx.AsyncClient() as http:
            for _ in range(600):
                if process.poll() is not None:
                    raise AssertionError(f"worker exited with {process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        return handle
                await asyncio.sleep(0.05)
        raise AssertionError("worker did not become ready")

    yield spawn
    for handle in procs:
        if handle.process.poll() is None:
            handle.process.kill()
            handle.process.wait(10)
