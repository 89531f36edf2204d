"""The worker with the real neonize driver, kept off WhatsApp by local proxies (one
that refuses, one that never answers): a connect through the API fails to dial, the device shows `error` with a clear `last_error`, and the worker
keeps retrying with backoff; the worker stays alive and answering."""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from clarin_common import nats as natsmod
from clarin_common.db import create_pool
from clarin_devices.settings import WorkerSettings
from clarin_devices.worker.driver_factory import build_driver
from clarin_devices.worker.drivers.neonize_driver import NeonizeConfig, NeonizeDriver
from clarin_devices.worker.worker import Worker
from clarin_devkit.testing import eventually
from clarin_devkit.testing.plugin import TestServers
from services.devices.tests.helpers import FAST_WORKER, Api, EventLog, Refusing


async def test_offline_neonize_connect_errors_clearly_and_is_retried(
    test_servers: TestServers, api: Api, events: EventLog, refusing: Refusing
) -> None:
    settings = WorkerSettings(
        worker_id=f"neo-{uuid.uuid4().hex[:6]}",
        **{
            **FAST_WORKER,
            "whatsapp_driver": "neonize",
            "neonize_proxy": refusing.proxy,  # refused at once, Internet or not
            "reconnect_base_seconds": 0.2,
            "reconnect_max_seconds": 1.0,
            # a pairing starts a process of its own: slow on a busy host
            "driver_call_timeout_seconds": 30.0,
        },
    )
    nc = await natsmod.connect(test_servers.nats_url, name=settings.worker_id)
    pool = await create_pool(test_servers.database_url, "devices", min_size=1, max_size=3)
    driver = build_driver(settings, nc)
    attempts: list[float] = []
    real_connect = driver.connect

    async def counting_connect(*args: Any, **kwargs: Any) -> None:
        attempts.append(time.monotonic())
        await real_connect(*args, **kwargs)

    driver.connect = counting_connect  # type: ignore[method-assign]
    worker = Worker(settings, pool, nc, driver)
    await worker.start()
    try:
        device = await api.create("Neonize line")
        started = time.monotonic()
        resp = await api.post(device["id"], "connect")
        assert resp.status_code == 202
        errored = await api.wait_status(device["id"], "error", timeout=60)
        assert "dial" in (errored["last_error"] or ""), errored
        # retried by the worker with backoff (the status stays `error` meanwhile)
        await events.wait(lambda: len(attempts) >= 3, timeout=60)
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert min(gaps) >= 0.1, gaps  # base 0.2 s with jitter in [0.5, 1]
        assert events.app_statuses(device["id"])[-1] == "error"
        assert time.monotonic() - started >= 0.2
        # the worker is alive and still answers its commands subject (no session: 409 path)
        resp = await api.post(device["id"], "pair-phone", json={"phone": "5215512345678"})
        assert resp.status_code in (409, 503), resp.text
        # and disconnecting stops the retries
        assert (await api.post(device["id"], "disconnect")).status_code == 202
        await api.wait_status(device["id"], "disconnected", timeout=30)
    finally:
        with contextlib.suppress(Exception):
            await worker.stop()
        await pool.close()
        await nc.close()


# ---- the worker with neonize's own events (injected into the real host) -------------------


@contextlib.asynccontextmanager
async def neonize_worker(
    test_servers: TestServers, proxy_port: int, **config: Any
) -> AsyncIterator[tuple[Worker, NeonizeDriver]]:

    from .test_neonize_driver import TEST_HOST

    # a pairing starts a process of its own (neonize loads in ~1 s, more on a busy host)
    settings = WorkerSettings(
        worker_id=f"neo-{uuid.uuid4().hex[:6]}",
        **{**FAST_WORKER, "driver_call_timeout_seconds": 30.0},
    )
    nc = await natsmod.connect(test_servers.nats_url, name=settings.worker_id)
    pool = await create_pool(test_servers.database_url, "devices", min_size=1, max_size=3)
    driver = NeonizeDriver(
        test_servers.database_url,
        NeonizeConfig(
            **{
                "proxy": f"http://127.0.0.1:{proxy_port}",
                "settle_timeout": 0.3,
                "call_timeout": 3.0,
                "ping_interval": 0.2,
                "host_command": TEST_HOST,
                "log_level": "WARNING",
                "max_store_connections": 40,
                "max_attempts_per_child": 25,
                **config,
            }
        ),
    )
    worker = Worker(settings, pool, nc, driver)
    await worker.start()
    try:
        yield worker, driver
    finally:
        with contextlib.suppress(Exception):
            await worker.stop()
        await pool.close()
        await nc.close()


def established(driver: NeonizeDriver, device: str) -> bool:
    """The device's session is in its child (events can be fed to it)."""
    session = driver.session(device)
    return session is not None and session.established


async def linked(api: Api, db: asyncpg.Pool, test_servers: TestServers) -> tuple[str, str]:
    """A device linked earlier: its session in the store, its JID on the row."""
    from .test_neonize_driver import store_fake_session

    number = f"52155{uuid.uuid4().int % 10**8:08d}"
    jid = f"{number}:5@s.whatsapp.net"
    await store_fake_session(test_servers.database_url, jid)
    device = await api.create("Real line")
    await db.execute(
        "UPDATE devices SET jid = $2, phone = $3 WHERE id = $1",
        uuid.UUID(device["id"]),
        jid,
        number,
    )
    return device["id"], jid


async def test_lid_messages_status_posts_and_media_reach_nats_as_the_contract_says(
    test_servers: TestServers, api: Api, events: EventLog, db: asyncpg.Pool
) -> None:
    from .test_neonize_driver import BlackHole, inject, message_ev

    hole = BlackHole()
    try:
        async with neonize_worker(test_servers, hole.port) as (_worker, driver):
            device, _jid = await linked(api, db, test_servers)
            assert (await api.post(device, "connect")).status_code == 202
            await events.wait(lambda: established(driver, device), timeout=30)
            lid = {"User": "246813579024680", "Server": "lid"}
            phone = {"User": "5215512340000", "Server": "s.whatsapp.net"}
            await inject(
                driver,
                device,
                "MessageEv",
                fields=message_ev(
                    "STATUSPOST",
                    {"Chat": {"User": "status", "Server": "broadcast"}, "Sender": phone},
                    {"conversation": "mi estado"},
                ),
            )
            await inject(
                driver,
                device,
                "MessageEv",
                fields=message_ev(
                    "FROMLID",
                    {"Chat": lid, "Sender": lid, "SenderAlt": phone},
                    {
                        "documentMessage": {
                            "mimetype": "application/pdf",
                            "fileName": "cotizacion.pdf",
                            "fileLength": "1234",
                        }
                    },
                ),
            )

            await events.wait(lambda: events.of(".media", device), timeout=15)
            [message] = [s.data["data"] for s in events.of(".message", device)]
            assert message["wa_message_id"] == "FROMLID"
            assert message["chat_jid"] == "5215512340000@s.whatsapp.net"
            assert message["chat_lid"] == "246813579024680@lid"
            assert message["media_info"]["file_name"] == "cotizacion.pdf"
            assert message["media_info"]["size"] == 1234
            [media] = [s.data["data"] for s in events.of(".media", device)]
            # no path to the file in the message: failed for good, said so
            assert media["wa_message_id"] == "FROMLID" and media["status"] == "failed"
            assert media["retryable"] is False and media["error"]
            subjects = [s.subject for s in events.items if s.data.get("device_id") == device]
            assert subjects.index(events.of(".message", device)[0].subject) < subjects.index(
                events.of(".media", device)[0].subject
            )
    finally:
        hole.close()


async def test_a_qr_that_is_never_scanned_ends_disconnected_and_connect_pairs_again(
    test_servers: TestServers, api: Api, events: EventLog
) -> None:
    from .test_neonize_driver import BlackHole, inject

    hole = BlackHole()
    try:
        async with neonize_worker(test_servers, hole.port) as (_worker, driver):
            device = (await api.create("New line"))["id"]
            assert (await api.post(device, "connect")).status_code == 202
            await events.wait(lambda: established(driver, device), timeout=30)
            await inject(driver, device, "qr", code="2@first,code")
            await api.wait_status(device, "qr_pending", timeout=10)

            async def shown() -> dict[str, Any] | None:
                qr = await api.client.get(f"/api/devices/{device}/qr", headers=api.headers)
                return qr.json() if qr.status_code == 200 else None

            shown_qr: dict[str, Any] | None = await eventually(shown, timeout=10)
            assert shown_qr is not None and shown_qr["code"] == "2@first,code"

            await inject(driver, device, "login_status", status="timeout")

            ended = await api.wait_status(device, "disconnected", timeout=10)
            assert "QR code expired" in (ended["last_error"] or "")
            qr = await api.client.get(f"/api/devices/{device}/qr", headers=api.headers)
            assert qr.status_code == 404
            assert driver.child_restarts == 0
            # the user asks again: a fresh pairing
            assert (await api.post(device, "connect")).status_code == 202
            await events.wait(lambda: established(driver, device), timeout=30)
            await inject(driver, device, "qr", code="2@second,code")
            await api.wait_status(device, "qr_pending", timeout=10)
    finally:
        hole.close()


async def test_logout_of_a_device_that_is_not_connected_says_the_phone_still_lists_it(
    test_servers: TestServers, api: Api, events: EventLog, db: asyncpg.Pool
) -> None:
    from .test_neonize_driver import BlackHole, stored_jids

    hole = BlackHole()
    try:
        async with neonize_worker(test_servers, hole.port, unlink_timeout=1.0) as (_w, driver):
            device, jid = await linked(api, db, test_servers)
            assert (await api.post(device, "connect")).status_code == 202
            await events.wait(lambda: established(driver, device), timeout=30)  # dial hangs

            assert (await api.post(device, "logout")).status_code == 202

            async def explained() -> dict[str, Any] | None:
                found = await api.get(device)
                return found if found["last_error"] else None

            device_row: dict[str, Any] | None = await eventually(explained, timeout=30)
            assert device_row is not None and device_row["status"] == "logged_out"
            assert "still lists this device" in device_row["last_error"]
            assert jid not in await stored_jids(test_servers.database_url)  # forgotten
    finally:
        hole.close()
