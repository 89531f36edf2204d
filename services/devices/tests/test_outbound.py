"""The durable send queue (WA_OUTBOX) through in-process workers and the
simulator: order, priority, a crashed worker, sends already done, and devices
that stay disconnected."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from clarin_common.events import (
    OUTBOX_DONE_BUCKET,
    WA_OUTBOX_STREAM,
    SendPriority,
    SendTextCommand,
    outbound_envelope,
    wa_outbox_subject,
)
from clarin_common.nats import encode, ensure_kv
from clarin_devices.worker.drivers.simulator import wa_message_id_for
from clarin_devices.worker.outbound import SendRecord, disconnected_reason
from clarin_devkit.testing import eventually
from services.devices.tests.helpers import Api, EventLog, Ledger, MakePaired, StartWorker

TO = "5215599990000"


@dataclass
class Phone:
    """What the simulator's device delivered to the other phones, in order."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    def bodies(self) -> list[str]:
        return [m["body"] for m in self.seen]


WatchPhone = Callable[[str], Awaitable[Phone]]
"""The ``phone`` fixture: what the simulated phone of a device receives."""


@pytest.fixture
async def phone(nats_client: NatsClient) -> AsyncIterator[WatchPhone]:
    subs = []

    async def watch(device_id: str) -> Phone:
        phone = Phone()

        async def cb(msg: Msg) -> None:
            phone.seen.append(json.loads(msg.data))

        subs.append(await nats_client.subscribe(f"simphone.{device_id}", cb=cb))
        await nats_client.flush()
        return phone

    yield watch
    for sub in subs:
        await sub.unsubscribe()


async def queue(
    nc: NatsClient,
    account_id: str,
    device_id: str,
    body: str,
    priority: SendPriority = "interactive",
) -> str:
    """Queue a send as messaging does; its message id."""
    command = SendTextCommand(message_id=str(uuid.uuid4()), to=TO, body=body)
    env = outbound_envelope(account_id, device_id, command)
    await nc.jetstream().publish(
        wa_outbox_subject(device_id, priority), encode(env), headers={"Nats-Msg-Id": env.id}
    )
    return command.message_id


def sent_events(events: EventLog, device_id: str) -> dict[str, dict[str, Any]]:
    return {s.data["data"]["message_id"]: s.data["data"] for s in events.of(".sent", device_id)}


async def queued_count(nc: NatsClient) -> int:
    info = await nc.jetstream().stream_info(WA_OUTBOX_STREAM)
    return int(info.state.messages)


async def _empty(nc: NatsClient) -> bool:
    return await queued_count(nc) == 0


async def test_sends_leave_in_queue_order_interactive_first(
    api: Api,
    events: EventLog,
    start_worker: StartWorker,
    make_paired: MakePaired,
    phone: WatchPhone,
    nats_client: NatsClient,
) -> None:
    [device_id] = await make_paired(1)
    seen: Phone = await phone(device_id)
    await start_worker("w1")
    # queued while the device is not connected: nothing goes out yet
    bulk = [await queue(nats_client, api.account_id, device_id, f"b{i}", "bulk") for i in range(5)]
    urgent = [await queue(nats_client, api.account_id, device_id, f"i{i}") for i in range(3)]
    assert await queued_count(nats_client) == 8
    await api.post(device_id, "connect")
    await events.wait(lambda: len(seen.seen) == 8)
    assert seen.bodies() == ["i0", "i1", "i2", "b0", "b1", "b2", "b3", "b4"]
    # the WhatsApp id is the one the send's id gives, and messaging hears of each
    await events.wait(lambda: len(sent_events(events, device_id)) == 8)
    sent = sent_events(events, device_id)
    for message_id, body in zip(urgent + bulk, seen.bodies(), strict=True):
        assert sent[message_id]["status"] == "sent"
        assert sent[message_id]["wa_message_id"] == wa_message_id_for(message_id)
        echo = next(
            m.data["data"]
            for m in events.of(".message", device_id)
            if m.data["data"]["message_id"] == message_id
        )
        assert echo["body"] == body and echo["direction"] == "out"
    # taken and acked: gone from the queue
    await eventually(lambda: _empty(nats_client))


async def test_a_send_already_done_is_reported_not_sent_again(
    api: Api,
    events: EventLog,
    start_worker: StartWorker,
    make_paired: MakePaired,
    phone: WatchPhone,
    nats_client: NatsClient,
) -> None:
    [device_id] = await make_paired(1)
    seen: Phone = await phone(device_id)
    await start_worker("w1")
    await api.post(device_id, "connect")
    await api.wait_status(device_id, "connected")
    # a worker sent this one, recorded it, and died before acking
    done = str(uuid.uuid4())
    record = SendRecord(
        status="sent",
        chat_jid=f"{TO}@s.whatsapp.net",
        wa_message_id="3EB0DONEBEFORE",
        sent_at=datetime.now(UTC),
    )
    kv = await ensure_kv(nats_client.jetstream(), OUTBOX_DONE_BUCKET)
    await kv.put(done, record.model_dump_json().encode())
    command = SendTextCommand(message_id=done, to=TO, body="already sent")
    env = outbound_envelope(api.account_id, device_id, command)
    await nats_client.jetstream().publish(
        wa_outbox_subject(device_id, "interactive"), encode(env), headers={"Nats-Msg-Id": done}
    )
    after = await queue(nats_client, api.account_id, device_id, "after")
    await events.wait(lambda: seen.bodies() == ["after"])
    await events.wait(lambda: len(sent_events(events, device_id)) == 2)
    sent = sent_events(events, device_id)
    assert sent[done]["wa_message_id"] == "3EB0DONEBEFORE"
    assert sent[after]["wa_message_id"] == wa_message_id_for(after)
    assert seen.bodies() == ["after"]


async def test_a_crashed_worker_s_queue_goes_out_once_in_order_from_the_next(
    api: Api,
    events: EventLog,
    start_worker: StartWorker,
    make_paired: MakePaired,
    phone: WatchPhone,
    nats_client: NatsClient,
    ledger: Ledger,
) -> None:
    [device_id] = await make_paired(1)
    seen: Phone = await phone(device_id)
    paced = {"send_rate_per_second": 20.0, "outbox_ack_wait_seconds": 1.0}
    first = await start_worker("w1", **paced)
    await api.post(device_id, "connect")
    await api.wait_status(device_id, "connected")
    bodies = [f"n{i:02d}" for i in range(40)]
    for body in bodies:
        await queue(nats_client, api.account_id, device_id, body)
    await events.wait(lambda: len(seen.seen) >= 8)
    await first.crash(ledger)
    await start_worker("w2", **paced)
    await events.wait(lambda: set(seen.bodies()) == set(bodies), timeout=30)
    # once per send as the recipient sees it (one WhatsApp id each), in queue order
    by_id: dict[str, str] = {}
    for message in seen.seen:
        assert by_id.setdefault(message["wa_message_id"], message["body"]) == message["body"]
    assert sorted(by_id.values()) == bodies
    assert list(dict.fromkeys(seen.bodies())) == bodies
    await events.wait(lambda: len(sent_events(events, device_id)) == 40)
    await eventually(lambda: _empty(nats_client))


async def test_sends_to_a_device_that_stays_disconnected_fail_with_the_reason(
    api: Api,
    events: EventLog,
    start_worker: StartWorker,
    make_paired: MakePaired,
    nats_client: NatsClient,
) -> None:
    quick = {"send_disconnected_timeout_seconds": 0.5, "outbox_sweep_interval_seconds": 0.2}
    await start_worker("w1", **quick)
    # one device no worker holds (never connected), one held but pairing, not connected
    [unheld] = await make_paired(1)
    pairing = await api.create("pairing")
    await api.post(pairing["id"], "connect")
    await api.wait_status(pairing["id"], "qr_pending")
    ids = {
        unheld: await queue(nats_client, api.account_id, unheld, "to nobody"),
        pairing["id"]: await queue(nats_client, api.account_id, pairing["id"], "to no one"),
    }
    for device_id, message_id in ids.items():

        def reported(d: str = device_id) -> dict[str, dict[str, Any]]:
            return sent_events(events, d)

        sent = await events.wait(reported, timeout=10)
        assert sent[message_id]["status"] == "failed"
        assert sent[message_id]["error"] == disconnected_reason(0.5)
        assert sent[message_id]["wa_message_id"] is None
    await eventually(lambda: _empty(nats_client))


async def _consumers_of(nc: NatsClient, device_id: str) -> set[str]:
    infos = await nc.jetstream().consumers_info(WA_OUTBOX_STREAM)
    return {i.name for i in infos if i.name.startswith(f"out-{device_id}-")}


async def test_a_device_binds_its_queue_only_once_something_is_queued(
    api: Api,
    events: EventLog,
    start_worker: StartWorker,
    make_paired: MakePaired,
    phone: WatchPhone,
    nats_client: NatsClient,
) -> None:
    # thousands of connected devices with nothing to send cost no consumer each
    idle, busy = await make_paired(2)
    seen: Phone = await phone(busy)
    await start_worker("w1")
    early = await queue(nats_client, api.account_id, busy, "queued before")
    for device_id in (idle, busy):
        await api.post(device_id, "connect")
    await api.wait_status(idle, "connected")
    await events.wait(lambda: seen.bodies() == ["queued before"])
    assert await _consumers_of(nats_client, idle) == set()
    # a send queued once connected is heard (one subscription per worker) and goes
    later = await queue(nats_client, api.account_id, idle, "queued after", "bulk")
    await events.wait(lambda: len(sent_events(events, idle)) == 1)
    assert sent_events(events, idle)[later]["status"] == "sent"
    assert sent_events(events, busy)[early]["status"] == "sent"
    assert await _consumers_of(nats_client, idle) == {f"out-{idle}-interactive", f"out-{idle}-bulk"}
