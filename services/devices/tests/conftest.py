from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
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
from clarin_devices.worker.drivers import DriverError
from clarin_devices.worker.drivers.simulator import SimulatorConfig, SimulatorDriver
from clarin_devices.worker.worker import Worker
from clarin_devkit.testing import free_port, running_app
from clarin_devkit.testing.plugin import TestServers
from services.devices.tests.helpers import Api, EventLog, Refusing, Seen

# fast clocks for tests; production defaults are in WorkerSettings
FAST_WORKER: dict[str, Any] = {
    "whatsapp_driver": "simulator",
    "heartbeat_interval_seconds": 0.3,
    "heartbeat_ttl_seconds": 1.5,
    "lease_ttl_seconds": 1.5,
    "lease_renew_interval_seconds": 0.3,
    "reconcile_interval_seconds": 0.3,
    "reconnect_base_seconds": 0.05,
    "reconnect_max_seconds": 0.5,
    "reconnect_stagger_seconds": 0.0,
    "send_rate_per_second": 200.0,
    "sim_qr_first_delay": 0.05,
    "sim_qr_interval": 20.0,
    "sim_receipt_delay": 0.05,
    "sim_read_delay": 0.05,
    "driver_call_timeout_seconds": 5.0,
}


@pytest.fixture(scope="session")
def refusing() -> Iterator[Refusing]:
    port = Refusing()
    yield port
    port.close()


@pytest.fixture(scope="session")
async def devices_app(test_servers: TestServers) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(DevicesSettings(command_timeout_seconds=3, db_pool_max=4))
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
def make_paired(api: Api, db: asyncpg.Pool) -> Callable[[int], Any]:
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
def sim_request(nats_client: NatsClient) -> Callable[..., Any]:
    async def request(device_id: str, action: str, **payload: Any) -> dict[str, Any]:
        return await sim(nats_client, device_id, action, **payload)

    return request


@dataclass
class Ledger:
    """Which in-process driver holds a live session of each device, over time.

    Fails the moment two workers hold the same device at once."""

    holders: dict[str, str] = field(default_factory=dict)
    # (monotonic time, device, worker, "open" | "close")
    history: list[tuple[float, str, str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def opened(self, device_id: str, worker_id: str) -> None:
        holder = self.holders.get(device_id)
        if holder is not None and holder != worker_id:
            self.violations.append(f"{device_id} opened by {worker_id} while {holder} holds it")
        self.holders[device_id] = worker_id
        self.history.append((time.monotonic(), device_id, worker_id, "open"))

    def closed(self, device_id: str, worker_id: str) -> None:
        if self.holders.get(device_id) == worker_id:
            del self.holders[device_id]
        self.history.append((time.monotonic(), device_id, worker_id, "close"))

    def first_open(self, device_id: str, worker_id: str, since: float = 0.0) -> float | None:
        """When ``worker_id`` first opened ``device_id`` (at or after ``since``)."""
        return next(
            (
                t
                for t, d, w, e in self.history
                if d == device_id and w == worker_id and e == "open" and t >= since
            ),
            None,
        )


class RecordingSimulator(SimulatorDriver):
    """The simulator, telling the ledger when a session opens and ends."""

    def __init__(self, nc: NatsClient, config: SimulatorConfig, worker_id: str, ledger: Ledger):
        super().__init__(nc, config)
        self.worker_id = worker_id
        self.ledger = ledger
        self.fail_connects = 0  # the next connects fail at once (as an offline dial does)
        self.connect_calls = 0

    async def connect(self, device_id: str, session_jid: str | None, events: Any) -> None:
        self.connect_calls += 1
        if self.fail_connects > 0:
            self.fail_connects -= 1
            raise DriverError("failed to dial whatsapp web websocket")
        if session_jid and session_jid.startswith("0"):
            raise DriverError("No stored WhatsApp session", code="session_not_found")
        self.ledger.opened(device_id, self.worker_id)
        await super().connect(device_id, session_jid, _LedgerEvents(events, self, device_id))

    async def disconnect(self, device_id: str) -> None:
        if device_id in self._sessions:
            await super().disconnect(device_id)
            self.ledger.closed(device_id, self.worker_id)


class _LedgerEvents:
    def __init__(self, inner: Any, driver: RecordingSimulator, device_id: str) -> None:
        self.inner = inner
        self.driver = driver
        self.device_id = device_id

    async def on_status(self, device_id: str, status: str, **kwargs: Any) -> None:
        if status in ("disconnected", "logged_out"):  # the driver ended the session itself
            self.driver.ledger.closed(device_id, self.driver.worker_id)
        await self.inner.on_status(device_id, status, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class RunningWorker:
    worker: Worker
    nc: NatsClient
    pool: asyncpg.Pool
    stopped: bool = False

    @property
    def id(self) -> str:
        return self.worker.id

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.worker.stop()
            await self.nc.close()
            await self.pool.close()

    async def crash(self, ledger: Ledger) -> None:
        """Vanish without a goodbye (as kill -9 would): no release, no leave; its
        WhatsApp sockets die with it."""
        self.stopped = True
        for task in self.worker._loops:
            task.cancel()
        await self.worker.outbound.abandon()
        for session in self.worker.sessions.values():
            session.closed = True
            ledger.closed(session.device_id, self.id)
        await self.nc.close()
        await self.pool.close()


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
async def start_worker(
    test_servers: TestServers, devices_app: httpx.AsyncClient, ledger: Ledger
) -> AsyncIterator[Callable[..., Any]]:
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
        handle = RunningWorker(worker, nc, pool)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        with contextlib.suppress(Exception):
            await handle.stop()
    assert not ledger.violations, ledger.violations


@dataclass
class WorkerProcess:
    worker_id: str
    process: subprocess.Popen[bytes]
    port: int

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@pytest.fixture
async def spawn_worker(
    test_servers: TestServers, devices_app: httpx.AsyncClient
) -> AsyncIterator[Callable[..., Any]]:
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
