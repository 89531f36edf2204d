"""A worker holding a device through a NATS outage says so once (``nats_unavailable``
for ``worker:{id}``: heartbeats, membership reads and lease renewals all fail
meanwhile) and once that it ended, and keeps its device connected. The NATS
server is private to the test, stopped and started again on the same store."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from clarin_common import nats as natsmod
from clarin_common.events import WA_EVENTS_STREAM
from clarin_devices.settings import WorkerSettings
from clarin_devices.worker.drivers.simulator import SimulatorConfig, SimulatorDriver
from clarin_devices.worker.worker import Worker
from clarin_devkit.devservers import free_ports, start_nats, stop_all
from clarin_devkit.testing import LogRecords, capture_log_events, eventually
from services.devices.tests.helpers import (
    FAST_WORKER,
    Api,
    MakePaired,
    SimRequest,
    StartWorker,
)


@pytest.fixture
def records() -> Iterator[LogRecords]:
    with capture_log_events() as handler:
        yield handler


async def test_a_worker_says_a_nats_outage_once_and_keeps_its_device(
    tmp_path: Path, make_paired: MakePaired, db: asyncpg.Pool, records: LogRecords
) -> None:
    [device_id] = await make_paired(1)
    await db.execute(
        "UPDATE devices SET desired_state = 'connected' WHERE id = $1", uuid.UUID(device_id)
    )
    root = tmp_path / "servers"
    port = free_ports(1)[0]
    start_nats(root / "nats", port)
    try:
        nc = await natsmod.connect(f"nats://127.0.0.1:{port}", name="w-outage")
        await natsmod.ensure_streams(nc.jetstream())
        # a lease that outlives the outage: the device stays held throughout
        settings = WorkerSettings(
            worker_id="w-outage",
            **{**FAST_WORKER, "lease_ttl_seconds": 30.0, "lease_renew_interval_seconds": 0.3},
        )
        worker = Worker(settings, db, nc, SimulatorDriver(nc, SimulatorConfig()))
        await worker.start()

        async def status() -> str:
            return str(
                await db.fetchval("SELECT status FROM devices WHERE id = $1", uuid.UUID(device_id))
            )

        async def connected() -> bool:
            return await status() == "connected"

        await eventually(connected, timeout=15)
        session = worker.sessions[device_id]

        stop_all(root)  # the server goes away
        await eventually(lambda: worker.outage.down, timeout=15)
        renewed_before = session.lease_ok_at
        start_nats(root / "nats", port)  # back, with its store (the lease is still there)
        await eventually(lambda: not worker.outage.down, timeout=30)
        await eventually(lambda: session.lease_ok_at > renewed_before, timeout=15)
        assert worker.sessions.get(device_id) is session and session.connected
        assert await status() == "connected"
        await worker.stop()
        await nc.close()
    finally:
        stop_all(root)

    [(level, said)] = records.named("nats_unavailable", "worker:w-outage")
    assert level == logging.WARNING and said["reason"]
    [(level, _)] = records.named("nats_restored", "worker:w-outage")
    assert level == logging.INFO
    for event in ("heartbeat_failed", "membership_read_failed", "lease_renew_failed", "lease_lost"):
        assert not records.named(event), event
    assert not [e for level, e in records.events if level >= logging.ERROR]


async def test_simulator_actions_failing_on_nats_say_it_once(
    api: Api,
    start_worker: StartWorker,
    make_paired: MakePaired,
    sim_request: SimRequest,
    nats_client: NatsClient,
    records: LogRecords,
) -> None:
    """JetStream without the stream the worker publishes to (as while NATS is away):
    every inbound message fails, the simulator says so once, then that it ended."""
    await start_worker("w1")
    [device_id] = await make_paired(1)
    await api.post(device_id, "connect")
    await api.wait_status(device_id, "connected")
    js = nats_client.jetstream()
    await js.delete_stream(WA_EVENTS_STREAM)
    for i in range(3):
        reply = await sim_request(device_id, "inbound", **{"from": "5215599998888", "body": f"{i}"})
        assert reply["ok"] is False, reply
    await natsmod.ensure_streams(js)
    reply = await sim_request(device_id, "inbound", **{"from": "5215599998888", "body": "back"})
    assert reply == {"ok": True}

    [(level, said)] = records.named("nats_unavailable", "simulator")
    assert level == logging.WARNING and "no response" in said["reason"], said
    [(level, _)] = records.named("nats_restored", "simulator")
    assert level == logging.INFO
    assert not records.named("sim_action_failed")
