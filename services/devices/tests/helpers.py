"""Typed helpers of the devices tests: an API client of one account, the log of
every event seen on NATS, the workers the fixtures start and the fixtures' types."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

import asyncpg
import httpx
from nats.aio.client import Client as NatsClient

from clarin_common.contract import DeviceStatus
from clarin_common.events import (
    WaEdit,
    WaHistory,
    WaMessage,
    WaPresence,
    WaReaction,
    WaReceipt,
    WaRevoke,
)
from clarin_devices.worker.drivers import DriverError, DriverEvents, InboundMedia, MediaOutcome
from clarin_devices.worker.drivers.simulator import SimulatorConfig, SimulatorDriver
from clarin_devices.worker.exceptions import SessionNotFound
from clarin_devices.worker.worker import Worker
from clarin_devkit.testing import auth_headers, eventually, make_token

T = TypeVar("T")

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


@dataclass
class Seen:
    subject: str
    data: dict[str, Any]
    headers: dict[str, str]
    at: float


@dataclass
class EventLog:
    """Every wa.evt.* and app.* message seen on NATS, in order."""

    items: list[Seen] = field(default_factory=list)

    def of(self, subject_suffix: str, device_id: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.items
            if s.subject.endswith(subject_suffix)
            and (device_id is None or s.data.get("device_id") == device_id)
        ]

    def statuses(self, device_id: str) -> list[str]:
        return [s.data["data"]["status"] for s in self.of(".status", device_id)]

    def app_statuses(self, device_id: str) -> list[str]:
        return [s.data["data"]["device"]["status"] for s in self.of(".device_status", device_id)]

    async def wait(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Until ``predicate`` (over the events seen so far) is truthy; its value."""
        return await eventually(predicate, timeout=timeout, interval=0.02)


class Api:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.account_id = str(uuid.uuid4())
        self.token = make_token(account_id=self.account_id)
        self.headers = auth_headers(self.token)

    async def create(self, name: str = "Sales line") -> dict[str, Any]:
        resp = await self.client.post("/api/devices", json={"name": name}, headers=self.headers)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    async def get(self, device_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/api/devices/{device_id}", headers=self.headers)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def post(self, device_id: str, action: str, **kwargs: Any) -> httpx.Response:
        return await self.client.post(
            f"/api/devices/{device_id}/{action}", headers=self.headers, **kwargs
        )

    async def wait_status(
        self, device_id: str, status: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The device once the API shows it in ``status``."""
        seen: list[str] = []

        async def reached() -> dict[str, Any] | None:
            device = await self.get(device_id)
            seen.append(device["status"])
            return device if device["status"] == status else None

        try:
            device: dict[str, Any] | None = await eventually(
                reached, timeout=timeout, interval=0.03
            )
        except AssertionError:
            raise AssertionError(f"device {device_id} is {seen[-1]}, not {status}") from None
        assert device is not None
        return device


class Refusing:
    """A local port bound and never listened on: a dial through it is refused at
    once (what an offline machine's failed DNS lookup did, but the same with
    Internet)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # held, never listening: connects get RST
        self.port = self.sock.getsockname()[1]
        self.proxy = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()


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

    async def connect(self, device_id: str, session_jid: str | None, events: DriverEvents) -> None:
        self.connect_calls += 1
        if self.fail_connects > 0:
            self.fail_connects -= 1
            raise DriverError("failed to dial whatsapp web websocket")
        if session_jid and session_jid.startswith("0"):
            raise SessionNotFound("No stored WhatsApp session")
        self.ledger.opened(device_id, self.worker_id)
        await super().connect(device_id, session_jid, _LedgerEvents(events, self, device_id))

    async def disconnect(self, device_id: str) -> None:
        if self.has_session(device_id):
            await super().disconnect(device_id)
            self.ledger.closed(device_id, self.worker_id)


class _LedgerEvents(DriverEvents):
    """The worker's events of one attempt, telling the ledger when the driver
    ended the session itself; everything else passed on as it is."""

    def __init__(self, inner: DriverEvents, driver: RecordingSimulator, device_id: str) -> None:
        self.inner = inner
        self.driver = driver
        self.device_id = device_id

    async def on_status(
        self,
        device_id: str,
        status: DeviceStatus,
        *,
        jid: str | None = None,
        phone: str | None = None,
        push_name: str | None = None,
        error: str | None = None,
    ) -> None:
        if status in ("disconnected", "logged_out"):  # the driver ended the session itself
            self.driver.ledger.closed(device_id, self.driver.worker_id)
        await self.inner.on_status(
            device_id, status, jid=jid, phone=phone, push_name=push_name, error=error
        )

    async def on_qr(self, device_id: str, code: str, expires_at: datetime) -> None:
        await self.inner.on_qr(device_id, code, expires_at)

    async def on_message(
        self, device_id: str, message: WaMessage, media: InboundMedia | None
    ) -> None:
        await self.inner.on_message(device_id, message, media)

    async def on_media(self, device_id: str, outcome: MediaOutcome) -> None:
        await self.inner.on_media(device_id, outcome)

    async def on_receipt(self, device_id: str, receipt: WaReceipt) -> None:
        await self.inner.on_receipt(device_id, receipt)

    async def on_edit(self, device_id: str, edit: WaEdit) -> None:
        await self.inner.on_edit(device_id, edit)

    async def on_revoke(self, device_id: str, revoke: WaRevoke) -> None:
        await self.inner.on_revoke(device_id, revoke)

    async def on_reaction(self, device_id: str, reaction: WaReaction) -> None:
        await self.inner.on_reaction(device_id, reaction)

    async def on_presence(self, device_id: str, presence: WaPresence) -> None:
        await self.inner.on_presence(device_id, presence)

    async def on_history(self, device_id: str, history: WaHistory) -> None:
        await self.inner.on_history(device_id, history)


@dataclass
class RunningWorker:
    worker: Worker
    driver: RecordingSimulator
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
        for task in self.worker.loops:
            task.cancel()
        await self.worker.outbound.abandon()
        for session in self.worker.sessions.values():
            session.closed = True
            ledger.closed(session.device_id, self.id)
        await self.nc.close()
        await self.pool.close()


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


class StartWorker(Protocol):
    """The ``start_worker`` fixture: an in-process worker on the simulator."""

    async def __call__(self, worker_id: str | None = None, **overrides: Any) -> RunningWorker: ...


class SpawnWorker(Protocol):
    """The ``spawn_worker`` fixture: a real worker process."""

    async def __call__(self, worker_id: str, **overrides: Any) -> WorkerProcess: ...


class SimRequest(Protocol):
    """The ``sim_request`` fixture: a request to the simulator's control subject."""

    async def __call__(self, device_id: str, action: str, **payload: Any) -> dict[str, Any]: ...


MakePaired = Callable[[int], Awaitable[list[str]]]
"""The ``make_paired`` fixture: that many devices with a stored session."""
