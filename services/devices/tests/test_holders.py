"""A device whose worker died shows ``connecting`` once the worker's heartbeat key
is gone, before its lease runs out and another worker takes it over; a worker whose
heartbeat only lapsed says ``connected`` again (devices/holders.py)."""

from __future__ import annotations

from typing import Any

import asyncpg
from nats.aio.client import Client as NatsClient

from clarin_common.outbox import Outbox
from clarin_devices.devices.holders import HolderCheck
from clarin_devices.worker import hrw
from services.devices.tests.helpers import (
    Api,
    EventLog,
    Ledger,
    MakePaired,
    SpawnWorker,
    StartWorker,
)


def wa_statuses(events: EventLog, device_id: str) -> list[tuple[str, str | None]]:
    """(status, worker_id) of the device's ``wa.evt…status`` events, in order."""
    return [
        (s.data["data"]["status"], s.data["data"]["worker_id"])
        for s in events.of(".status", device_id)
    ]


def holder(events: EventLog, device_id: str) -> str | None:
    statuses = wa_statuses(events, device_id)
    if statuses and statuses[-1][0] == "connected":
        return statuses[-1][1]
    return None


async def test_a_killed_workers_devices_show_connecting_before_another_takes_them(
    api: Api,
    events: EventLog,
    spawn_worker: SpawnWorker,
    start_worker: StartWorker,
    make_paired: MakePaired,
    ledger: Ledger,
) -> None:
    # heartbeat keys expire after 1.5 s (FAST_WORKER), leases only after 8 s
    leases: dict[str, Any] = {"lease_ttl_seconds": 8.0, "lease_renew_interval_seconds": 1.0}
    proc = await spawn_worker("p1", **leases)
    devices = await make_paired(8)
    for device_id in devices:
        assert (await api.post(device_id, "connect")).status_code == 202
    await events.wait(lambda: all(holder(events, d) == "p1" for d in devices), timeout=15)
    await start_worker("w2", **leases)
    expected = {d: hrw.owner(d, ["p1", "w2"]) for d in devices}
    await events.wait(lambda: all(holder(events, d) == expected[d] for d in devices), timeout=15)
    on_p1 = [d for d in devices if expected[d] == "p1"]
    on_w2 = [d for d in devices if expected[d] == "w2"]
    assert on_p1

    proc.kill()  # kill -9: no release, no leave, its leases stay until they expire
    for device_id in on_p1:
        device = await api.wait_status(device_id, "connecting", timeout=15)
        # shown while p1's lease still stands: w2 has not opened the device yet
        assert ledger.first_open(device_id, "w2") is None, device_id
        assert device["last_error"] is None

    def settled(device_id: str) -> bool:
        return holder(events, device_id) == "w2" and events.app_statuses(device_id)[-1:] == [
            "connected"
        ]

    await events.wait(lambda: all(settled(d) for d in devices), timeout=30)
    for device_id in on_p1:
        statuses = wa_statuses(events, device_id)
        # p1 connected, the API said connecting (no worker), then w2 connected
        assert statuses[-3:] == [("connected", "p1"), ("connecting", None), ("connected", "w2")]
        # the same on app.{account}.device_status, the WebSocket's device_status
        assert events.app_statuses(device_id)[-3:] == ["connected", "connecting", "connected"]
        assert (await api.get(device_id))["status"] == "connected"
    for device_id in on_w2:  # handed over by p1 while it lived: the API said nothing
        statuses = wa_statuses(events, device_id)
        first_connected = statuses.index(("connected", "p1"))
        assert ("connecting", None) not in statuses[first_connected:], statuses
    assert not ledger.violations


async def test_a_worker_whose_heartbeat_lapsed_says_connected_again(
    api: Api,
    events: EventLog,
    start_worker: StartWorker,
    make_paired: MakePaired,
    nats_client: NatsClient,
    db: asyncpg.Pool,
) -> None:
    w1 = await start_worker("w1")
    [device_id] = await make_paired(1)
    await api.post(device_id, "connect")
    await api.wait_status(device_id, "connected")
    heartbeats = w1.worker.loops[0]
    heartbeats.cancel()  # the worker stalls: no heartbeat until the test sends one
    await events.wait(heartbeats.done)
    members = await nats_client.jetstream().key_value(w1.worker.settings.members_bucket)
    await members.delete("w1")  # as if the key had expired

    js = nats_client.jetstream()
    async with Outbox(db, js, 60.0, "devices") as outbox:
        # the API's own check may get there first: either way it is said once
        check = HolderCheck(db, js, outbox, w1.worker.settings.members_bucket, 60.0)
        await check.check()
        await api.wait_status(device_id, "connecting")
        assert await check.check() == []
    await events.wait(lambda: events.app_statuses(device_id)[-1:] == ["connecting"])
    assert events.app_statuses(device_id).count("connecting") == 2  # on connect, then this

    await w1.worker.heartbeat()  # the stall ends: its key was gone, its session is not
    device = await api.wait_status(device_id, "connected")
    assert device["jid"] is not None
    await events.wait(lambda: events.app_statuses(device_id)[-1:] == ["connected"])
    assert w1.driver.connect_calls == 1  # the same session throughout, never reconnected


async def test_devices_of_live_workers_and_of_no_worker_are_left_alone(
    api: Api,
    start_worker: StartWorker,
    make_paired: MakePaired,
    nats_client: NatsClient,
    db: asyncpg.Pool,
) -> None:
    await start_worker("w1")
    [device_id] = await make_paired(1)
    await api.post(device_id, "connect")
    await api.wait_status(device_id, "connected")
    js = nats_client.jetstream()
    async with Outbox(db, js, 60.0, "devices") as outbox:
        assert await HolderCheck(db, js, outbox, "device_workers", 60.0).check() == []
        # no members bucket (no worker ever started it): nothing can be said
        assert await HolderCheck(db, js, outbox, "no_such_bucket", 60.0).check() == []
    assert (await api.get(device_id))["status"] == "connected"
