"""Issue 15, the durable send queue, through the gateway of the running system
with the simulator: a kill -9 of the worker that holds the device, or of
messaging, while 200 sends are queued loses none and sends none twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from nats.aio.msg import Msg

from clarin_common.nats import connect
from clarin_devkit.testing import eventually

from .helpers import bearer, linked_device, register
from .system import System

TO = "5215577770000"


@dataclass
class Phone:
    """What the contacts' phones received from one device (``simphone.{device}``)."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    def bodies(self) -> list[str]:
        return [m["body"] for m in self.seen]

    def received(self) -> list[str]:
        """The messages as a recipient shows them: one per WhatsApp id, in order."""
        first: dict[str, str] = {}
        for message in self.seen:
            first.setdefault(message["wa_message_id"], message["body"])
        return list(first.values())


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, timeout=15) as c:
        yield c


@contextlib.asynccontextmanager
async def phone_of(system: System, device_id: str) -> AsyncIterator[Phone]:
    nc = await connect(system.nats_url, name="e2e-phone")
    phone = Phone()

    async def cb(msg: Msg) -> None:
        phone.seen.append(json.loads(msg.data))

    await nc.subscribe(f"simphone.{device_id}", cb=cb)
    await nc.flush()
    try:
        yield phone
    finally:
        await nc.close()


async def _owner(system: System, device_id: str) -> str:
    """The process name (``worker1``…) of the worker holding the device's lease."""
    nc = await connect(system.nats_url, name="e2e-lease")
    try:
        entry = await (await nc.jetstream().key_value("device_leases")).get(device_id)
    finally:
        await nc.close()
    holder = (entry.value or b"").decode().split("/", 1)[0]
    return "worker" + holder.rsplit("-", 1)[1]


async def _status(client: httpx.AsyncClient, session: dict[str, Any], device_id: str) -> str:
    got = await client.get(f"/api/devices/{device_id}", headers=bearer(session))
    return str(got.json()["status"])


async def _queue(
    client: httpx.AsyncClient, session: dict[str, Any], device_id: str, bodies: list[str]
) -> list[dict[str, Any]]:
    sent = []
    for body in bodies:
        resp = await client.post(
            "/api/messages/send",
            json={"device_id": device_id, "to": TO, "body": body},
            headers=bearer(session),
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["status"] == "pending"
        sent.append(resp.json())
    return sent


async def _all_settled(
    client: httpx.AsyncClient, session: dict[str, Any], chat_id: str, count: int
) -> bool:
    resp = await client.get(
        f"/api/chats/{chat_id}/messages", params={"limit": 200}, headers=bearer(session)
    )
    items = resp.json()["items"]
    while resp.json()["next_cursor"]:
        resp = await client.get(
            f"/api/chats/{chat_id}/messages",
            params={"limit": 200, "cursor": resp.json()["next_cursor"]},
            headers=bearer(session),
        )
        items += resp.json()["items"]
    outbound = [m for m in items if m["direction"] == "out"]
    return len(outbound) == count and all(
        m["status"] in ("sent", "delivered", "read") for m in outbound
    )


async def _queued_while_disconnected(
    client: httpx.AsyncClient, system: System, phone_number: str, count: int
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """A linked device, disconnected, with ``count`` sends queued for it."""
    session = await register(client)
    device = await linked_device(client, session, system.nats_url, phone_number)
    resp = await client.post(f"/api/devices/{device['id']}/disconnect", headers=bearer(session))
    assert resp.status_code == 202, resp.text
    await eventually(
        lambda: _is(client, session, device["id"], "disconnected"), timeout=20, interval=0.1
    )
    sent = await _queue(client, session, device["id"], [f"m{i:03d}" for i in range(count)])
    return session, device, sent


async def _is(client: httpx.AsyncClient, session: dict[str, Any], device_id: str, s: str) -> bool:
    return await _status(client, session, device_id) == s


async def test_a_killed_worker_loses_no_queued_send_and_sends_none_twice(
    client: httpx.AsyncClient, system: System
) -> None:
    session, device, sent = await _queued_while_disconnected(client, system, "5215570000001", 200)
    bodies = [m["body"] for m in sent]
    async with phone_of(system, device["id"]) as phone:
        assert phone.seen == []  # nothing leaves a disconnected device
        resp = await client.post(f"/api/devices/{device['id']}/connect", headers=bearer(session))
        assert resp.status_code == 202, resp.text
        await eventually(lambda: len(phone.seen) >= 20, timeout=30, interval=0.01)
        owner = await _owner(system, device["id"])
        await asyncio.to_thread(system.kill, owner)
        before_restart = len(phone.received())
        assert before_restart < 200, "the queue drained before the kill: nothing was tested"
        system.start(owner)
        await asyncio.to_thread(system.wait_ready, owner)
        await eventually(lambda: len(phone.received()) == 200, timeout=120, interval=0.2)
        # once each, as the recipient sees it, and in the order they were queued
        assert phone.received() == bodies
        by_body: dict[str, set[str]] = {}
        for message in phone.seen:
            by_body.setdefault(message["body"], set()).add(message["wa_message_id"])
        assert all(len(ids) == 1 for ids in by_body.values())
    chat_id = sent[0]["chat_id"]
    await eventually(lambda: _all_settled(client, session, chat_id, 200), timeout=60)


async def test_a_killed_messaging_loses_no_queued_send(
    client: httpx.AsyncClient, system: System
) -> None:
    session, device, sent = await _queued_while_disconnected(client, system, "5215570000002", 100)
    async with phone_of(system, device["id"]) as phone:
        resp = await client.post(f"/api/devices/{device['id']}/connect", headers=bearer(session))
        assert resp.status_code == 202, resp.text
        await eventually(lambda: len(phone.seen) >= 20, timeout=30, interval=0.01)
        await asyncio.to_thread(system.kill, "messaging")
        system.start("messaging")
        await asyncio.to_thread(system.wait_ready, "messaging")
        # sends accepted after the restart join the same queue, behind the others
        sent += await _queue(client, session, device["id"], [f"n{i:03d}" for i in range(100)])
        await eventually(lambda: len(phone.received()) == 200, timeout=120, interval=0.2)
        assert phone.received() == [m["body"] for m in sent]
        assert len(phone.seen) == 200
    chat_id = sent[0]["chat_id"]
    await eventually(lambda: _all_settled(client, session, chat_id, 200), timeout=60)
