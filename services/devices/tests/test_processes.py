"""Real worker processes: SIGTERM hands devices over at once, SIGKILL after the
lease expires; never two holders at once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from clarin_common.app import service_context
from clarin_common.errors import ServiceUnavailable
from clarin_devices.settings import WorkerSettings
from clarin_devices.worker import hrw
from clarin_devices.worker.main import create_app
from clarin_devices.worker.worker import Worker
from clarin_devkit.testing import running_app
from services.devices.tests.helpers import (
    FAST_WORKER,
    Api,
    EventLog,
    Ledger,
    MakePaired,
    SpawnWorker,
    StartWorker,
)


def status_events(events: EventLog, device_id: str) -> list[dict[str, Any]]:
    return [s.data["data"] for s in events.of(".status", device_id)]


def holder(events: EventLog, device_id: str) -> str | None:
    statuses = status_events(events, device_id)
    if statuses and statuses[-1]["status"] == "connected":
        return str(statuses[-1]["worker_id"])
    return None


def assert_never_two_holders(events: EventLog, device_id: str) -> None:
    """From the status events in stream order: a worker reports ``connected``
    only after the previous holder let go (handoff) or its lease expired."""
    current: str | None = None
    for event in status_events(events, device_id):
        worker, status = event["worker_id"], event["status"]
        if worker is None:
            continue
        if status == "connected":
            assert current in (None, worker), f"{worker} connected while {current} held it"
            current = worker
        elif worker == current:
            current = None


async def test_sigterm_hands_devices_over_at_once(
    api: Api,
    events: EventLog,
    spawn_worker: SpawnWorker,
    start_worker: StartWorker,
    make_paired: MakePaired,
    ledger: Ledger,
) -> None:
    # leases far longer than the test may wait: only a release explains a quick move
    slow_leases = {"lease_ttl_seconds": 30, "lease_renew_interval_seconds": 5}
    proc = await spawn_worker("p1", **slow_leases)
    devices = await make_paired(10)
    for device_id in devices:
        await api.post(device_id, "connect")
    await events.wait(lambda: all(holder(events, d) == "p1" for d in devices), timeout=15)

    w2 = await start_worker("w2", **slow_leases)
    expected = {d: hrw.owner(d, ["p1", "w2"]) for d in devices}
    await events.wait(lambda: all(holder(events, d) == expected[d] for d in devices), timeout=10)

    assert proc.terminate() in (0, -15)  # uvicorn re-raises SIGTERM after its graceful exit
    # well before p1's 30 s leases could run out: only their release lets w2 in
    await events.wait(lambda: all(holder(events, d) == "w2" for d in devices), timeout=15)
    for device_id in devices:
        assert_never_two_holders(events, device_id)
        if expected[device_id] == "p1":  # p1 said it let go before w2 took it
            statuses = status_events(events, device_id)
            release = max(
                i
                for i, e in enumerate(statuses)
                if e["worker_id"] == "p1" and e["status"] == "connecting"
            )
            taken = min(
                i
                for i, e in enumerate(statuses)
                if e["worker_id"] == "w2" and e["status"] == "connected"
            )
            assert release < taken
    assert w2.worker.sessions.keys() == set(devices)
    assert not ledger.violations


async def test_sigkill_moves_devices_after_the_lease_expires(
    api: Api,
    events: EventLog,
    spawn_worker: SpawnWorker,
    start_worker: StartWorker,
    make_paired: MakePaired,
    ledger: Ledger,
) -> None:
    proc = await spawn_worker("p1", lease_ttl_seconds=2.0, lease_renew_interval_seconds=0.4)
    devices = await make_paired(10)
    for device_id in devices:
        await api.post(device_id, "connect")
    await events.wait(lambda: all(holder(events, d) == "p1" for d in devices), timeout=15)
    await start_worker("w2", lease_ttl_seconds=2.0, lease_renew_interval_seconds=0.4)
    expected = {d: hrw.owner(d, ["p1", "w2"]) for d in devices}
    await events.wait(lambda: all(holder(events, d) == expected[d] for d in devices), timeout=10)
    on_p1 = [d for d in devices if expected[d] == "p1"]
    assert on_p1

    killed_at = time.monotonic()  # it renews nothing after this
    proc.kill()
    await events.wait(lambda: all(holder(events, d) == "w2" for d in devices), timeout=30)
    for device_id in on_p1:
        opened = ledger.first_open(device_id, "w2")
        assert opened is not None
        # p1 renewed at most 0.4 s before it died; its 2 s lease had to run out first
        assert opened - killed_at > 1.4, opened - killed_at
        assert (await api.get(device_id))["status"] == "connected"


async def test_the_worker_app_starts_its_worker_as_its_context_and_hands_over_on_stop(
    api: Api, make_paired: MakePaired
) -> None:
    """``clarin_devices.worker.main``'s app, in-process: its context is the started
    Worker, which holds devices while the app runs and lets them go when it stops."""
    app = create_app(WorkerSettings(worker_id="w-app", **FAST_WORKER))
    [device] = await make_paired(1)
    async with running_app(app) as client:
        worker = service_context(app, Worker)
        assert worker.ready
        assert (await api.post(device, "connect")).status_code == 202
        await api.wait_status(device, "connected")
        assert worker.sessions[device].connected
        assert (await client.get("/readyz")).status_code == 200
    assert not worker.ready and worker.sessions == {}
    # handed over (no other worker here to take it): waiting for one, not disconnected
    assert (await api.get(device))["status"] == "connecting"
    with pytest.raises(ServiceUnavailable):
        service_context(app, Worker)
