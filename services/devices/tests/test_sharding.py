"""Workers share devices by HRW, hand them over on stop and take them back after
a crash, and a device is never held by two workers at once."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client as NatsClient

from clarin_common.events import SendTextCommand, wa_command_subject
from clarin_common.nats import request_json
from clarin_devices.worker import hrw
from services.devices.tests.helpers import (
    Api,
    EventLog,
    Ledger,
    MakePaired,
    RunningWorker,
    StartWorker,
)


async def connect_all(api: Api, device_ids: list[str]) -> None:
    for device_id in device_ids:
        resp = await api.post(device_id, "connect")
        assert resp.status_code == 202


def holders(*workers: RunningWorker) -> dict[str, str]:
    return {
        device_id: w.id
        for w in workers
        if not w.stopped
        for device_id, session in w.worker.sessions.items()
        if session.connected
    }


def hrw_split(device_ids: list[str], worker_ids: list[str]) -> dict[str, str]:
    return {d: hrw.owner(d, worker_ids) or "" for d in device_ids}


async def test_hrw_distributes_devices_over_two_workers(
    api: Api, events: EventLog, start_worker: StartWorker, make_paired: MakePaired
) -> None:
    w1 = await start_worker("w1")
    w2 = await start_worker("w2")
    devices = await make_paired(24)
    await connect_all(api, devices)
    expected = hrw_split(devices, ["w1", "w2"])
    await events.wait(lambda: holders(w1, w2) == expected, timeout=10)
    assert 0 < list(expected.values()).count("w1") < len(devices)
    for device_id in devices:
        assert (await api.get(device_id))["status"] == "connected"
        statuses = [s.data["data"] for s in events.of(".status", device_id)]
        assert statuses[-1]["worker_id"] == expected[device_id]


async def test_adding_a_worker_moves_its_share_to_it(
    api: Api, events: EventLog, start_worker: StartWorker, make_paired: MakePaired, ledger: Ledger
) -> None:
    w1 = await start_worker("w1")
    devices = await make_paired(16)
    await connect_all(api, devices)
    await events.wait(lambda: len(holders(w1)) == len(devices), timeout=10)
    w2 = await start_worker("w2")
    expected = hrw_split(devices, ["w1", "w2"])
    await events.wait(lambda: holders(w1, w2) == expected, timeout=10)
    moved = [d for d, w in expected.items() if w == "w2"]
    assert moved
    # w1 let go (handoff) before w2 connected it
    await events.wait(
        lambda: all(events.app_statuses(d)[-2:] == ["connecting", "connected"] for d in moved)
    )
    assert not ledger.violations


async def test_graceful_stop_hands_devices_over_at_once(
    api: Api, events: EventLog, start_worker: StartWorker, make_paired: MakePaired, ledger: Ledger
) -> None:
    # long leases: only a real release lets the other worker in quickly
    w1 = await start_worker("w1", lease_ttl_seconds=30, lease_renew_interval_seconds=5)
    w2 = await start_worker("w2", lease_ttl_seconds=30, lease_renew_interval_seconds=5)
    devices = await make_paired(16)
    await connect_all(api, devices)
    await events.wait(lambda: len(holders(w1, w2)) == len(devices), timeout=10)
    on_w1 = [d for d, w in holders(w1, w2).items() if w == "w1"]
    assert on_w1
    await w1.stop()
    # well before w1's 30 s leases could run out: only their release lets w2 in
    await events.wait(lambda: holders(w1, w2) == dict.fromkeys(devices, "w2"), timeout=15)
    for device_id in on_w1:
        assert ledger.first_open(device_id, "w2") is not None
    assert not ledger.violations


async def test_a_crashed_workers_devices_come_back_after_lease_expiry(
    api: Api, events: EventLog, start_worker: StartWorker, make_paired: MakePaired, ledger: Ledger
) -> None:
    w1 = await start_worker("w1")
    w2 = await start_worker("w2")
    devices = await make_paired(16)
    await connect_all(api, devices)
    await events.wait(lambda: len(holders(w1, w2)) == len(devices), timeout=10)
    # w1 renews nothing from the moment crash() starts; what it awaits after
    # that (closing NATS and its pool) may take a while on a busy machine.
    # What w1 holds is read from the ledger at that moment: a device still
    # moving between the two when they first settled belongs to w2 already.
    crashed_at = time.monotonic()
    on_w1 = [d for d, w in ledger.holders.items() if w == "w1"]
    assert on_w1
    await w1.crash(ledger)
    await events.wait(lambda: holders(w1, w2) == dict.fromkeys(devices, "w2"), timeout=15)
    for device_id in on_w1:
        opened = ledger.first_open(device_id, "w2", since=crashed_at)
        assert opened is not None
        # not before w1's lease ran out (TTL 1.5 s, renewed every 0.3 s)
        assert opened - crashed_at > 1.0
    assert not ledger.violations
    for device_id in devices:
        assert (await api.get(device_id))["status"] == "connected"


async def test_a_moved_device_answers_commands_from_its_new_owner(
    api: Api,
    events: EventLog,
    start_worker: StartWorker,
    make_paired: MakePaired,
    nats_client: NatsClient,
) -> None:
    """After a move the new owner answers commands; the old one writes nothing more."""
    w1 = await start_worker("w1")
    devices = await make_paired(6)
    await connect_all(api, devices)
    await events.wait(lambda: len(holders(w1)) == len(devices), timeout=10)
    w2 = await start_worker("w2")
    expected = hrw_split(devices, ["w1", "w2"])
    await events.wait(lambda: holders(w1, w2) == expected, timeout=10)
    for device_id in devices:
        reply = await request_json(
            nats_client,
            wa_command_subject(device_id),
            SendTextCommand(message_id=f"m-{device_id}", to="5215599998888", body="hi"),
        )
        assert reply["ok"] is True, reply
        resp = await api.post(device_id, "pair-phone", json={"phone": "5215512345678"})
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "already_paired"

    # the old owner wrote its handoff before it let the lease go, so the new
    # owner's "connected" is the last word on each device
    def settled() -> bool:
        for device_id in devices:
            statuses = events.of(".status", device_id)
            if not statuses:
                return False
            last = statuses[-1].data["data"]
            if last["status"] != "connected" or last["worker_id"] != expected[device_id]:
                return False
        return True

    await events.wait(settled, timeout=10)
    moved = [d for d, w in expected.items() if w == "w2"]
    assert moved and not set(moved) & set(w1.worker.sessions)


async def test_stop_ends_a_loop_that_lost_its_cancellation(
    start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's wait_for drops a cancellation that arrives just as what it
    waits for completes (a heartbeat's KV put answered at that moment): the loop
    runs on, and a stop that cancelled it once waited for it for good."""
    w1 = await start_worker("w1")
    inside, dropped = asyncio.Event(), asyncio.Event()

    async def heartbeat() -> None:
        inside.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if dropped.is_set():
                raise
            dropped.set()  # what wait_for does when the answer came with the cancel

    monkeypatch.setattr(w1.worker, "heartbeat", heartbeat)
    await asyncio.wait_for(inside.wait(), 10)

    await asyncio.wait_for(w1.stop(), 30)

    assert dropped.is_set()
    assert w1.worker.loops and all(task.done() for task in w1.worker.loops)
