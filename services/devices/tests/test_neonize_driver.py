"""The neonize driver, kept off WhatsApp whatever the network: every connect
goes through a local proxy address that refuses connections, so it fails to
dial at once — or, behind a "black hole" proxy that accepts and never answers,
hangs for good (the hazard that makes ``stop()`` hang too). No test depends on
this machine having no Internet (or a DNS that fails fast).

Sessions run in child processes; these tests check that what goes wrong there
(crashes, kills, hung calls, leaked DB pools, bad JIDs) costs a child and is
reported, never the worker process running the driver (this test process).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest
from pydantic import BaseModel

from clarin_common.db import with_database
from clarin_common.events import (
    WaEdit,
    WaHistory,
    WaMessage,
    WaPresence,
    WaReaction,
    WaReceipt,
    WaRevoke,
)
from clarin_devices.worker.drivers import (
    DriverError,
    InboundMedia,
    MediaOutcome,
    NotConnected,
)
from clarin_devices.worker.drivers.neonize_driver import (
    NeonizeConfig,
    NeonizeDriver,
    NeonizeSession,
    store_dsn,
)
from clarin_devkit.testing import eventually
from clarin_devkit.testing.plugin import TestServers
from services.devices.tests.helpers import Refusing

TEST_HOST = (sys.executable, str(Path(__file__).with_name("neonize_test_host.py")))

pytestmark = pytest.mark.usefixtures("clean_state")

# 200 at once: children start one after the other under the store budget;
# lower it with CLARIN_NEONIZE_STORM on a slower machine.
# bench/neonize_bench.py repeats it.
STORM = int(os.environ.get("CLARIN_NEONIZE_STORM", "200"))


class Recorder:
    """DriverEvents that remembers everything it is told."""

    def __init__(self) -> None:
        self.statuses: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self.qrs: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
        self.messages: dict[str, list[tuple[WaMessage, InboundMedia | None]]] = defaultdict(list)
        self.receipts: dict[str, list[WaReceipt]] = defaultdict(list)
        self.media: dict[str, list[MediaOutcome]] = defaultdict(list)
        self.timeline: list[tuple[str, str]] = []  # (what, wa_message_id)
        # issue 12's kinds: edit, revoke, reaction, presence, history
        self.others: dict[str, list[BaseModel]] = defaultdict(list)

    async def on_qr(self, device_id: str, code: str, expires_at: datetime) -> None:
        self.qrs[device_id].append((code, expires_at))

    async def on_status(self, device_id: str, status: str, **data: Any) -> None:
        self.statuses[device_id].append((status, data))

    async def on_message(
        self, device_id: str, message: WaMessage, media: InboundMedia | None
    ) -> None:
        self.messages[device_id].append((message, media))
        self.timeline.append(("message", message.wa_message_id))

    async def on_receipt(self, device_id: str, receipt: WaReceipt) -> None:
        self.receipts[device_id].append(receipt)

    async def on_media(self, device_id: str, outcome: MediaOutcome) -> None:
        self.media[device_id].append(outcome)
        self.timeline.append(("media", outcome.wa_message_id))

    async def on_edit(self, device_id: str, edit: WaEdit) -> None:
        self.others[device_id].append(edit)

    async def on_revoke(self, device_id: str, revoke: WaRevoke) -> None:
        self.others[device_id].append(revoke)

    async def on_reaction(self, device_id: str, reaction: WaReaction) -> None:
        self.others[device_id].append(reaction)

    async def on_presence(self, device_id: str, presence: WaPresence) -> None:
        self.others[device_id].append(presence)

    async def on_history(self, device_id: str, history: WaHistory) -> None:
        self.others[device_id].append(history)

    def terminal(self, device_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            s for s in self.statuses[device_id] if s[0] in ("disconnected", "error", "logged_out")
        ]


class BlackHole:
    """A TCP server that accepts connections and never answers (a dead proxy)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def config(**overrides: Any) -> NeonizeConfig:
    base: dict[str, Any] = {
        "sessions_per_child": 25,
        "max_attempts_per_child": 25,
        "max_store_connections": 40,
        "call_timeout": 10.0,
        "settle_timeout": 2.0,
        "ping_interval": 0.2,
        "unresponsive_timeout": 10.0,
        "host_command": TEST_HOST,
        "log_level": "WARNING",
    }
    base.update(overrides)
    return NeonizeConfig(**base)


class MakeDriver(Protocol):
    """The ``make_driver`` fixture: a started driver (dialling through a refusing
    proxy unless told otherwise), stopped after the test."""

    async def __call__(self, **overrides: Any) -> NeonizeDriver: ...


@pytest.fixture
async def make_driver(test_servers: TestServers, refusing: Refusing) -> AsyncIterator[MakeDriver]:
    drivers: list[NeonizeDriver] = []

    async def make(**overrides: Any) -> NeonizeDriver:
        overrides.setdefault("proxy", refusing.proxy)  # never WhatsApp itself
        driver = NeonizeDriver(test_servers.database_url, config(**overrides))
        drivers.append(driver)
        await driver.start()
        return driver

    yield make
    for driver in drivers:
        await driver.stop()


def held(driver: NeonizeDriver, device: str) -> NeonizeSession:
    """The driver's session of the device, which must have one."""
    session = driver.session(device)
    assert session is not None, f"no session of {device}"
    return session


def new_id() -> str:
    return str(uuid.uuid4())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


async def store_connections(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    )


# ---- loading and the store ------------------------------------------------------------


async def test_start_loads_neonize_in_a_child_and_creates_the_store_tables(
    make_driver: MakeDriver, test_servers: TestServers
) -> None:
    driver = await make_driver()

    [pid] = driver.child_pids()
    assert pid != os.getpid() and alive(pid)
    assert "neonize" not in __import__("sys").modules  # never loaded in the worker
    conn = await asyncpg.connect(test_servers.database_url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'devices_wa' ORDER BY 1"
        )
    finally:
        await conn.close()
    names = {r["tablename"] for r in tables}
    assert "whatsmeow_device" in names
    assert len([n for n in names if n.startswith("whatsmeow_")]) >= 10


async def test_workers_starting_at_once_create_the_store_one_at_a_time(
    test_servers: TestServers,
) -> None:
    # `make run` starts two workers together on an empty store: whatsmeow's
    # table creation is not safe to run twice at once. An empty database of its
    # own (whatsmeow checks for its tables in any schema of the database).
    name = f"clarin_store_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(test_servers.admin_database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    database_url = with_database(test_servers.database_url, name)
    conn = await asyncpg.connect(database_url)
    key = "clarin:whatsmeow-store:devices_wa"
    drivers = [NeonizeDriver(database_url, config()) for _ in range(2)]
    starts: list[asyncio.Task[None]] = []
    try:
        # as if a third worker were creating it right now
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", key)
        starts = [asyncio.create_task(d.start()) for d in drivers]

        async def both_waiting() -> bool:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            return bool(waiting == 2)

        await eventually(both_waiting, timeout=15)
        assert not any(d.child_pids() for d in drivers)  # nothing touched the store yet

        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)
        await asyncio.wait_for(asyncio.gather(*starts), timeout=60)

        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'devices_wa'")
        assert "whatsmeow_device" in {r["tablename"] for r in tables}
        assert all(len(d.child_pids()) == 1 for d in drivers)
    finally:
        for task in starts:
            task.cancel()
        for driver in drivers:
            await driver.stop()
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def test_store_dsn_points_lib_pq_at_our_schema() -> None:
    dsn = store_dsn("postgresql://u:p@db:5432/clarin", "devices_wa")
    assert dsn == "postgres://u:p@db:5432/clarin?sslmode=disable&search_path=devices_wa"
    kept = store_dsn("postgresql://db/clarin?sslmode=require", "devices_wa")
    assert "sslmode=require" in kept


def test_config_refuses_a_settle_time_above_the_hang_timeout() -> None:
    with pytest.raises(ValueError, match="settle_timeout"):
        NeonizeConfig(call_timeout=1, settle_timeout=2)
    with pytest.raises(ValueError, match="schema"):
        NeonizeConfig(store_schema="x; drop table")


# ---- connects that fail ------------------------------------------------------------------


async def test_a_connect_that_cannot_dial_reports_disconnected_with_the_cause(
    make_driver: MakeDriver,
) -> None:
    driver = await make_driver()
    events = Recorder()
    device = new_id()

    await driver.connect(device, None, events)

    await eventually(lambda: events.terminal(device), timeout=15)
    [(status, data)] = events.terminal(device)
    assert status == "disconnected"
    assert "dial" in data["error"]
    assert not driver.is_connected(device)
    with pytest.raises(NotConnected):
        await driver.send_text(device, "5215512345678@s.whatsapp.net", "hola")


async def store_fake_session(database_url: str, jid: str) -> None:
    """A whatsmeow_device row as a pairing would leave it (keys are filler)."""
    conn = await asyncpg.connect(database_url)
    try:
        columns = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'devices_wa' AND table_name = 'whatsmeow_device' "
            "AND is_nullable = 'NO' AND column_default IS NULL"
        )
        values: dict[str, Any] = {}
        for col in columns:
            name, kind = col["column_name"], col["data_type"]
            if name == "jid":
                values[name] = jid
            elif kind == "bytea":
                values[name] = b"\x01" * (64 if name.endswith("_sig") else 32)
            elif kind in ("integer", "bigint", "smallint"):
                values[name] = 1
            elif kind == "boolean":
                values[name] = False
            else:
                values[name] = "x"
        names = ", ".join(values)
        params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        await conn.execute(
            f"INSERT INTO devices_wa.whatsmeow_device ({names}) VALUES ({params})",
            *values.values(),
        )
    finally:
        await conn.close()


async def stored_jids(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return [r["jid"] for r in await conn.fetch("SELECT jid FROM devices_wa.whatsmeow_device")]
    finally:
        await conn.close()


async def linked_devices(
    driver: NeonizeDriver, database_url: str, events: Recorder, count: int, prefix: str = "5215553"
) -> list[str]:
    """``count`` devices resumed from stored sessions (they go to shared children)."""
    devices = []
    for i in range(count):
        number = f"{prefix}{uuid.uuid4().int % 10**6:06d}"  # the store outlives a test
        jid = f"{number}:{i % 9 + 1}@s.whatsapp.net"
        await store_fake_session(database_url, jid)
        device = new_id()
        await driver.connect(device, jid, events)
        devices.append(device)
    return devices


async def inject(driver: NeonizeDriver, device: str, event: str, **fields: Any) -> None:
    session = held(driver, device)
    await driver.pool.request(
        session.child, "debug_inject", sid=session.sid, event=event, timeout=10, **fields
    )


async def test_a_storm_of_resumes_leaves_the_worker_alive_and_the_store_bounded(
    make_driver: MakeDriver, test_servers: TestServers
) -> None:
    # what a worker restart does: every linked device resumes at once
    budget = 40  # the PostgreSQL here is shared (max_connections 100)
    driver = await make_driver(max_store_connections=budget)
    events = Recorder()
    base = uuid.uuid4().int % 10**4
    jids = [f"521{base:04d}{i:06d}:3@s.whatsapp.net" for i in range(STORM)]
    for jid in jids:
        await store_fake_session(test_servers.database_url, jid)
    devices = [new_id() for _ in range(STORM)]
    conn = await asyncpg.connect(test_servers.database_url)
    baseline = await store_connections(conn)
    peak = baseline
    peak_rss = 0
    pids: set[int] = set()

    sampling = asyncio.Event()
    sampling.set()

    async def sample() -> None:
        # stopped between queries, never cancelled in one: the connection is read again
        # after it (CI saw "another operation is in progress" after a cancel)
        nonlocal peak, peak_rss
        while sampling.is_set():
            peak = max(peak, await store_connections(conn))
            children = driver.child_pids()
            pids.update(children)
            peak_rss = max(peak_rss, rss_kb(os.getpid()) + sum(rss_kb(p) for p in children))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    try:
        await asyncio.gather(*(driver.connect(d, j, events) for d, j in zip(devices, jids)))
        await eventually(lambda: all(events.terminal(d) for d in devices), timeout=120)
    finally:
        sampling.clear()
        await sampler
    elapsed = time.monotonic() - started
    try:
        await eventually(lambda: driver.store_connections_reserved() <= budget, timeout=10)
        after = await store_connections(conn)
    finally:
        await conn.close()

    for device in devices:
        [(status, data)] = events.terminal(device)  # exactly one, with the cause
        assert status == "disconnected" and data["error"]
    assert peak - baseline <= budget + 2, (peak, baseline)  # + the driver's own connection
    assert len(pids) >= 2  # it took several children
    assert after - baseline <= budget
    # the driver still answers: a later connect is served and reported
    late = new_id()
    await driver.connect(late, None, events)
    await eventually(lambda: events.terminal(late), timeout=15)
    print(
        f"\n{STORM} failed resumes: {elapsed:.1f} s, {len(pids)} children, "
        f"store connections peak {peak - baseline} (budget {budget}), "
        f"RSS peak {peak_rss / 1024:.0f} MB"
    )


async def test_new_devices_pair_in_children_of_their_own_a_few_at_a_time(
    make_driver: MakeDriver,
) -> None:
    driver = await make_driver(pairing_children=2)
    events = Recorder()
    devices = [new_id() for _ in range(12)]

    await asyncio.gather(*(driver.connect(d, None, events) for d in devices))

    await eventually(lambda: all(events.terminal(d) for d in devices), timeout=60)
    for device in devices:
        [(status, data)] = events.terminal(device)
        assert status == "disconnected" and "dial" in data["error"]
    assert len(driver.child_pids("pairing")) <= 2
    assert driver.child_restarts == 0


async def test_a_jid_missing_from_the_store_is_refused_without_a_crash(
    make_driver: MakeDriver,
) -> None:
    driver = await make_driver()
    [pid] = driver.child_pids()
    events = Recorder()

    with pytest.raises(DriverError) as raised:
        await driver.connect(new_id(), "5215550001111:7@s.whatsapp.net", events)

    assert raised.value.code == "session_not_found"
    assert driver.child_pids() == [pid] and alive(pid)
    device = new_id()
    await driver.connect(device, None, events)  # still serving
    await eventually(lambda: events.terminal(device), timeout=15)


async def test_a_stored_jid_resumes_that_session(
    make_driver: MakeDriver, test_servers: TestServers
) -> None:
    driver = await make_driver()
    number = f"52155{uuid.uuid4().int % 10**8:08d}"
    await store_fake_session(test_servers.database_url, f"{number}:4@s.whatsapp.net")
    events = Recorder()
    device = new_id()

    # the worker may have kept the JID without its device part: same number
    await driver.connect(device, f"{number}@s.whatsapp.net", events)

    await eventually(lambda: events.terminal(device), timeout=15)
    [(status, data)] = events.terminal(device)
    assert status == "disconnected" and "dial" in data["error"]
    with pytest.raises(DriverError) as raised:
        other = Recorder()
        await driver.connect(new_id(), "5215550009999@s.whatsapp.net", other)
    assert raised.value.code == "session_not_found"


async def test_commands_to_a_device_that_never_connected_raise_not_connected(
    make_driver: MakeDriver,
) -> None:
    driver = await make_driver()
    device = new_id()

    with pytest.raises(NotConnected):
        await driver.send_text(device, "5215512345678@s.whatsapp.net", "hola")
    with pytest.raises(NotConnected):
        await driver.send_media(
            device, "5215512345678@s.whatsapp.net", "image", b"x", "image/png", None, None
        )
    with pytest.raises(NotConnected):
        await driver.mark_read(device, "5215512345678@s.whatsapp.net", None, ["ABC"])
    with pytest.raises(NotConnected):
        await driver.pair_phone(device, "5215512345678")
    with pytest.raises(NotConnected):
        await driver.retry_media(device, "ABC", "5215512345678@s.whatsapp.net", "image/png", "{}")
    assert driver.is_connected(device) is False
    await driver.disconnect(device)  # nothing to do, no error
    await driver.logout(device)


# ---- sessions that hang, children that die -----------------------------------------------


async def test_a_killed_child_reports_its_sessions_and_a_new_child_serves_later_connects(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3)
    events = Recorder()
    first, second = await linked_devices(driver, test_servers.database_url, events, 2)
    pid = driver.session_pid(first)
    assert pid is not None and driver.session_pid(second) == pid
    assert events.terminal(first) == [] and events.terminal(second) == []  # hanging

    os.kill(pid, signal.SIGKILL)

    await eventually(lambda: events.terminal(first) and events.terminal(second), timeout=10)
    for device in (first, second):
        [(status, data)] = events.terminal(device)
        assert status == "disconnected"
        assert f"pid {pid}" in data["error"] and "signal 9" in data["error"]
    assert driver.child_restarts == 1
    [later] = await linked_devices(driver, test_servers.database_url, events, 1, "5215554")
    new_pid = driver.session_pid(later)
    assert new_pid is not None and new_pid != pid and alive(new_pid)


async def test_stopping_a_session_whose_dial_hangs_leaves_the_others_alone(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    # neonize's stop() waits for a hanging dial's lock (measured: for good): the
    # host leaves that client be and stops it once its dial is over
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=1.5
    )
    events = Recorder()
    leaving, bystander = await linked_devices(driver, test_servers.database_url, events, 2)
    pid = driver.session_pid(leaving)
    assert pid is not None and driver.session_pid(bystander) == pid

    await asyncio.wait_for(driver.disconnect(leaving), timeout=10)

    # a later call through the same lane is answered: the lane is free
    [later] = await linked_devices(driver, test_servers.database_url, events, 1, "5215555")
    assert driver.session_pid(later) == pid
    # the watchdog looked at the child past the hang timeout and found it well
    past_the_hang_timeout = time.monotonic() + 2 * 1.5
    shared = held(driver, bystander).child
    await eventually(lambda: shared.healthy_at > past_the_hang_timeout, timeout=15)
    assert alive(pid) and driver.session_pid(bystander) == pid
    assert events.terminal(bystander) == [] and events.terminal(leaving) == []
    assert driver.child_restarts == 0


async def test_a_child_busy_past_the_call_timeout_is_replaced(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=1.0
    )
    events = Recorder()
    [device] = await linked_devices(driver, test_servers.database_url, events, 1)
    session = held(driver, device)
    pid = session.child.pid

    # a test-only operation: the child's lane sleeps as a hung Go call would
    with pytest.raises(DriverError) as raised:
        await driver.pool.request(session.child, "debug_sleep", seconds=30, timeout=15)

    assert raised.value.code == "driver_crashed"
    await eventually(lambda: events.terminal(device), timeout=5)
    assert "hung" in events.terminal(device)[0][1]["error"]
    assert pid is not None and not alive(pid)
    assert driver.child_restarts == 1


async def test_a_long_transfer_is_busy_not_hung(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=1.0
    )
    events = Recorder()
    [device] = await linked_devices(driver, test_servers.database_url, events, 1)
    session = held(driver, device)
    pid = session.child.pid

    # an upload three times as long as the hang timeout, its bytes moving
    await driver.pool.request(session.child, "debug_transfer", seconds=3, timeout=15)

    assert pid is not None and alive(pid)
    assert events.terminal(device) == [] and driver.child_restarts == 0


async def test_a_go_crash_costs_one_child_and_its_sessions_are_reported(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3)
    events = Recorder()
    [bystander] = await linked_devices(driver, test_servers.database_url, events, 1)
    session = held(driver, bystander)
    pid = session.child.pid
    assert pid is not None

    # what the driver's JID check prevents: Go dereferences nil and aborts
    with pytest.raises(DriverError) as raised:
        await driver.pool.request(
            session.child,
            "debug_connect_unchecked",
            sid=new_id(),
            device_id=new_id(),
            jid="5215550003333:9@s.whatsapp.net",
            timeout=15,
        )

    assert raised.value.code == "driver_crashed"
    await eventually(lambda: events.terminal(bystander), timeout=5)
    [(status, data)] = events.terminal(bystander)
    assert status == "disconnected"
    assert "crashed: panic: runtime error: invalid memory address" in data["error"]
    assert not alive(pid)


# ---- pairing: a child of its own, QR codes that run out, handoff ----------------------


async def pairing_device(driver: NeonizeDriver, events: Recorder) -> str:
    """A new device showing a QR code (its dial hangs; the code is injected)."""
    device = new_id()
    await driver.connect(device, None, events)
    await inject(driver, device, "qr", code="2@abc,def")
    await eventually(lambda: events.qrs[device], timeout=10)
    return device


async def test_stopping_a_pairing_device_never_touches_another_session(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=1.5
    )
    events = Recorder()
    bystanders = await linked_devices(driver, test_servers.database_url, events, 3)
    [shared_pid] = {driver.session_pid(d) for d in bystanders}
    assert shared_pid is not None
    showing_qr = await pairing_device(driver, events)
    dialing = new_id()  # stopped before WhatsApp said anything
    await driver.connect(dialing, None, events)
    pairing_pids = {driver.session_pid(showing_qr), driver.session_pid(dialing)}
    assert shared_pid not in pairing_pids and None not in pairing_pids
    assert [s for s, _ in events.statuses[showing_qr]] == ["qr_pending"]

    await asyncio.wait_for(driver.disconnect(showing_qr), timeout=10)
    await asyncio.wait_for(driver.logout(dialing), timeout=10)

    stopped = [pid for pid in pairing_pids if pid is not None]
    assert len(stopped) == 2
    await eventually(lambda: not any(alive(pid) for pid in stopped), timeout=5)
    [later] = await linked_devices(driver, test_servers.database_url, events, 1, "5215556")
    assert driver.session_pid(later) == shared_pid  # its lane still answers
    # the watchdog looked at the shared child past the hang timeout and found it well
    past_the_hang_timeout = time.monotonic() + 2 * 1.5
    shared = held(driver, later).child
    await eventually(lambda: shared.healthy_at > past_the_hang_timeout, timeout=15)
    assert alive(shared_pid)
    assert all(driver.session_pid(d) == shared_pid for d in bystanders)
    assert all(events.terminal(d) == [] for d in [*bystanders, showing_qr, dialing])
    assert driver.child_restarts == 0


async def test_qr_codes_that_run_out_end_the_pairing_and_a_new_connect_pairs_afresh(
    make_driver: MakeDriver, black_hole: BlackHole
) -> None:
    driver = await make_driver(proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3)
    events = Recorder()
    device = await pairing_device(driver, events)
    pid = driver.session_pid(device)
    assert pid is not None

    # whatsmeow's QR channel closes with "timeout" (its only word of it)
    await inject(driver, device, "login_status", status="timeout")

    await eventually(lambda: events.terminal(device), timeout=10)
    [(status, data)] = events.terminal(device)
    assert status == "disconnected" and data["error"] == "qr_expired"
    await eventually(lambda: not alive(pid), timeout=5)
    assert driver.child_restarts == 0
    again = Recorder()
    await driver.connect(device, None, again)
    assert driver.session_pid(device) not in (None, pid), again.statuses
    await inject(driver, device, "qr", code="2@new,code")
    await eventually(lambda: again.qrs[device], timeout=10)
    assert [s for s, _ in again.statuses[device]] == ["qr_pending"]


async def test_a_pairing_past_its_last_code_ends_on_the_drivers_own_deadline(
    make_driver: MakeDriver, black_hole: BlackHole
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, qr_grace=0.5
    )
    events = Recorder()
    device = new_id()
    await driver.connect(device, None, events)
    session = held(driver, device)
    await driver.pool.request(session.child, "debug_qr_validity", first=0.5, next=0.5, timeout=5)
    pid = session.child.pid

    await inject(driver, device, "qr", code="2@only,code")  # and no word after it

    await eventually(lambda: events.terminal(device), timeout=10)
    [(status, data)] = events.terminal(device)
    assert status == "disconnected" and data["error"] == "qr_expired"
    assert pid is not None
    await eventually(lambda: not alive(pid), timeout=5)


async def test_a_scanned_pairing_hands_the_session_to_a_shared_child(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3)
    events = Recorder()
    [bystander] = await linked_devices(driver, test_servers.database_url, events, 1)
    shared_pid = driver.session_pid(bystander)
    device = await pairing_device(driver, events)
    pairing_pid = driver.session_pid(device)
    number = f"52155{uuid.uuid4().int % 10**8:08d}"
    jid = f"{number}:12@s.whatsapp.net"
    await store_fake_session(test_servers.database_url, jid)  # what the pairing stored

    await inject(
        driver,
        device,
        "PairStatusEv",
        fields={"ID": {"User": number, "Device": 12, "Server": "s.whatsapp.net"}, "Status": 2},
    )
    await inject(driver, device, "ConnectedEv", fields={"status": True})

    await eventually(lambda: any(s == "connected" for s, _ in events.statuses[device]), 10)
    [(_, data)] = [x for x in events.statuses[device] if x[0] == "connected"]
    assert data["jid"] == jid and data["phone"] == number
    assert pairing_pid is not None
    await eventually(lambda: not alive(pairing_pid), timeout=5)
    await eventually(lambda: driver.session_pid(device) == shared_pid, timeout=10)
    assert driver.is_connected(device)  # commands wait for the resumed session
    await inject(driver, device, "ConnectedEv", fields={"status": True})
    await eventually(lambda: held(driver, device).state == "connected", timeout=10)
    assert events.terminal(device) == [] and events.terminal(bystander) == []
    assert driver.child_restarts == 0


# ---- what neonize hands over, as its own protobuf objects --------------------------------


def message_ev(msg_id: str, source: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    return {
        "Info": {
            "ID": msg_id,
            "Pushname": "Ana",
            "Timestamp": "1700000000000",
            "MessageSource": source,
        },
        "Message": message,
    }


PHONE = {"User": "5215512345678", "Server": "s.whatsapp.net"}
LID = {"User": "123456789012345", "Server": "lid"}


async def test_messages_and_receipts_are_mapped_to_driver_events(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=2.0
    )
    events = Recorder()
    [device] = await linked_devices(driver, test_servers.database_url, events, 1)

    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev(
            "3EB0AAA", {"Chat": PHONE, "Sender": {**PHONE, "Device": 3}}, {"conversation": "hola"}
        ),
    )
    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev(
            "3EB0CCC",
            {"Chat": PHONE, "Sender": PHONE},
            {"senderKeyDistributionMessage": {"groupID": "g"}},
        ),
    )
    await inject(
        driver,
        device,
        "ReceiptEv",
        fields={
            "MessageIDs": ["3EB0X", "3EB0Y"],
            "Type": "READ",
            "Timestamp": "1700000002",
            "MessageSource": {"Chat": PHONE},
        },
    )

    await eventually(lambda: events.messages[device] and events.receipts[device], 10)
    [(text, no_media)] = events.messages[device]
    assert text.wa_message_id == "3EB0AAA" and text.body == "hola" and text.type == "text"
    assert text.direction == "in" and text.push_name == "Ana"
    assert text.chat_jid == "5215512345678@s.whatsapp.net" and text.chat_lid is None
    assert text.sender_jid == "5215512345678@s.whatsapp.net"
    assert text.sent_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert no_media is None
    [receipt] = events.receipts[device]
    assert receipt.status == "read" and receipt.wa_message_ids == ["3EB0X", "3EB0Y"]


async def test_a_contact_writing_from_a_lid_is_published_with_its_phone(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=3.0
    )
    events = Recorder()
    [device] = await linked_devices(driver, test_servers.database_url, events, 1)
    # what whatsmeow learnt earlier: this LID is that phone (its LID map)
    conn = await asyncpg.connect(test_servers.database_url)
    try:
        await conn.execute(
            "INSERT INTO devices_wa.whatsmeow_lid_map (lid, pn) VALUES ($1, $2)",
            "987654321098765",
            "5215598765432",
        )
    finally:
        await conn.close()

    # with SenderAlt: the phone came along
    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev(
            "LID1",
            {
                "Chat": LID,
                "Sender": {**LID, "Device": 2},
                "SenderAlt": {**PHONE, "Device": 2},
                "AddressingMode": "LID",
            },
            {"conversation": "hola desde lid"},
        ),
    )
    # without it: the store's LID map knows the phone
    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev(
            "LID2",
            {"Chat": {"User": "987654321098765", "Server": "lid"}, "Sender": LID},
            {"conversation": "otro"},
        ),
    )
    # a LID nobody knows: published as the LID (the phone may come later)
    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev(
            "LID3",
            {"Chat": {"User": "111111111111111", "Server": "lid"}},
            {"conversation": "sin teléfono"},
        ),
    )
    # our own message to a LID chat, sent from the phone: RecipientAlt
    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev(
            "LID4",
            {"Chat": LID, "Sender": PHONE, "IsFromMe": True, "RecipientAlt": PHONE},
            {"conversation": "respuesta"},
        ),
    )

    await eventually(lambda: len(events.messages[device]) == 4, timeout=10)
    by_id = {m.wa_message_id: m for m, _ in events.messages[device]}
    first = by_id["LID1"]
    assert first.chat_jid == "5215512345678@s.whatsapp.net"
    assert first.chat_lid == "123456789012345@lid"
    assert first.sender_jid == "5215512345678@s.whatsapp.net"
    assert first.sender_lid == "123456789012345@lid"
    mapped = by_id["LID2"]
    assert mapped.chat_jid == "5215598765432@s.whatsapp.net"
    assert mapped.chat_lid == "987654321098765@lid"
    unknown = by_id["LID3"]
    assert unknown.chat_jid == "111111111111111@lid" and unknown.chat_lid == "111111111111111@lid"
    ours = by_id["LID4"]
    assert ours.direction == "out"
    assert ours.chat_jid == "5215512345678@s.whatsapp.net"
    assert ours.chat_lid == "123456789012345@lid"
    assert [m.wa_message_id for m, _ in events.messages[device]] == ["LID1", "LID2", "LID3", "LID4"]


async def test_status_broadcasts_are_published_nowhere(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3)
    events = Recorder()
    [device] = await linked_devices(driver, test_servers.database_url, events, 1)
    status = {"User": "status", "Server": "broadcast"}

    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev(
            "STATUS1",
            {"Chat": status, "Sender": PHONE, "IsGroup": True},
            {"imageMessage": {"mimetype": "image/jpeg", "directPath": "/v/x", "mediaKey": "AA=="}},
        ),
    )
    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev("AFTER", {"Chat": PHONE, "Sender": PHONE}, {"conversation": "hola"}),
    )

    await eventually(lambda: events.messages[device], timeout=10)
    assert [m.wa_message_id for m, _ in events.messages[device]] == ["AFTER"]
    assert events.media[device] == []


@pytest.mark.parametrize(
    ("kind", "fields", "status", "needle"),
    [
        ("LoggedOutEv", {"OnConnect": False, "Reason": "LOGGED_OUT"}, "logged_out", "unlinked"),
        ("StreamReplacedEv", {}, "disconnected", "Another client connected"),
        ("TemporaryBanEv", {"Code": "SEND_TO_TOO_MANY_PEOPLE", "Expire": 3600}, "error", "banned"),
        ("ClientOutdatedEv", {}, "error", "client version"),
        ("ConnectFailureEv", {"Reason": "SERVICE_UNAVAILABLE"}, "error", "refused"),
    ],
)
async def test_the_end_of_a_session_is_reported_with_its_cause(
    make_driver: MakeDriver,
    black_hole: BlackHole,
    test_servers: TestServers,
    kind: str,
    fields: dict[str, Any],
    status: str,
    needle: str,
) -> None:
    driver = await make_driver(proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3)
    events = Recorder()
    [device] = await linked_devices(driver, test_servers.database_url, events, 1)
    pid = driver.session_pid(device)

    await inject(driver, device, kind, fields=fields)

    await eventually(lambda: events.terminal(device), timeout=10)
    [(reported, data)] = events.terminal(device)
    assert reported == status and needle in data["error"]
    assert pid is not None and alive(pid)


async def test_unlinked_from_the_phone_forgets_the_session(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    jid = f"52155{uuid.uuid4().int % 10**8:08d}:2@s.whatsapp.net"
    await store_fake_session(test_servers.database_url, jid)
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=1.5
    )
    events = Recorder()
    device = new_id()
    await driver.connect(device, jid, events)

    await inject(driver, device, "LoggedOutEv", fields={"OnConnect": False, "Reason": "LOGGED_OUT"})

    await eventually(lambda: events.terminal(device), timeout=10)
    [(status, data)] = events.terminal(device)
    assert status == "logged_out" and data["jid"] == jid
    await eventually(lambda: _gone(test_servers.database_url, jid), timeout=10)
    with pytest.raises(DriverError) as raised:
        await driver.connect(device, jid, events)
    assert raised.value.code == "session_not_found"


async def _gone(database_url: str, jid: str) -> bool:
    return jid not in await stored_jids(database_url)


# ---- calls into Go stay on the lane ----------------------------------------------------


async def test_every_client_has_its_own_go_identity_and_no_finalizer(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3)
    events = Recorder()
    [device] = await linked_devices(driver, test_servers.database_url, events, 1)
    jid = held(driver, device).jid
    first_sid = held(driver, device).sid
    await driver.disconnect(device)
    await driver.connect(device, jid, events)  # the same number again, same child
    session = held(driver, device)

    clients = await driver.pool.request(session.child, "debug_clients", timeout=10)

    # neonize would key both by the number ("5215553000000"): the old client's
    # finalizer would then stop the new session from the collecting thread
    assert f"clarin-{session.sid}" in clients["uuids"]
    assert f"clarin-{first_sid}" in clients["uuids"]  # kept until Go's Stop ran
    assert len(set(clients["uuids"])) == len(clients["uuids"])
    assert not any(clients["finalizers"])


async def test_a_connected_event_after_the_stop_never_reaches_go(
    make_driver: MakeDriver, test_servers: TestServers
) -> None:
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    port = refusing.getsockname()[1]
    refusing.close()  # nothing listens: every dial is refused at once
    driver = await make_driver(proxy=f"http://127.0.0.1:{port}", settle_timeout=0.3)
    events = Recorder()
    [device] = await linked_devices(driver, test_servers.database_url, events, 1)
    await eventually(lambda: events.terminal(device), timeout=10)  # ended: Go's Stop ran
    [child] = [c for c in driver.pool.children if c.role == "shared"]
    pid = child.pid
    sids = await driver.pool.request(child, "debug_sessions", timeout=10)

    # Go's GetMe of a stopped client dereferences nil and aborts the process
    await driver.pool.request(
        child, "debug_inject", sid=sids[device], event="ConnectedEv", fields={}, timeout=10
    )
    [late] = await linked_devices(driver, test_servers.database_url, events, 1, "5215558")
    await eventually(lambda: events.terminal(late), timeout=10)  # the lane ran past it

    assert pid is not None and alive(pid)
    assert "connected" not in [s for s, _ in events.statuses[device]]
    assert driver.child_restarts == 0


# ---- media: the message at once, the file after it ----------------------------------------


def encrypt_media(kind: str, data: bytes, media_key: bytes) -> bytes:
    """The blob WhatsApp's media server holds for ``data`` (what a sender uploads):
    AES-256-CBC with keys from HKDF(mediaKey), then a 10-byte HMAC."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from clarin_devices.worker.drivers.neonize_media import media_keys

    label = {"image": b"WhatsApp Image Keys", "document": b"WhatsApp Document Keys"}[kind]
    iv, cipher_key, mac_key = media_keys(media_key, label)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    return ciphertext + hmac.new(mac_key, iv + ciphertext, hashlib.sha256).digest()[:10]


class MediaServer:
    """WhatsApp's media host, played locally: a path answers with a blob, an
    HTTP status, or nothing until released."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.files: dict[str, bytes] = {}
        self.statuses: dict[str, int] = {}
        self.held: set[str] = set()
        self.release = threading.Event()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.requests.append(path)
                if path in server.held:
                    server.release.wait(30)
                if path in server.statuses:
                    self.send_response(server.statuses[path])
                    self.end_headers()
                    return
                body = server.files.get(path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def media_server() -> Iterator[MediaServer]:
    server = MediaServer()
    yield server
    server.close()


def media_message(path: str, data: bytes, blob: bytes, key: bytes, **extra: Any) -> dict[str, Any]:
    import base64
    import hashlib

    return {
        "imageMessage": {
            "mimetype": "image/jpeg",
            "caption": "foto",
            "directPath": path + "?ccb=11-4",
            "mediaKey": base64.b64encode(key).decode(),
            "fileSHA256": base64.b64encode(hashlib.sha256(data).digest()).decode(),
            "fileEncSHA256": base64.b64encode(hashlib.sha256(blob).digest()).decode(),
            "fileLength": str(len(data)),
            **extra,
        }
    }


async def test_media_is_announced_with_its_message_then_fetched_failed_or_refused(
    make_driver: MakeDriver,
    black_hole: BlackHole,
    test_servers: TestServers,
    media_server: MediaServer,
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}",
        settle_timeout=0.3,
        media_host=media_server.url,
        media_via_proxy=False,  # the proxy is the black hole that keeps the session up
        media_download_timeout=1.0,
        media_max_bytes=5000,
    )
    events = Recorder()
    [device] = await linked_devices(driver, test_servers.database_url, events, 1)
    key = os.urandom(32)
    photo = os.urandom(3000)
    blob = encrypt_media("image", photo, key)
    media_server.files["/v/ok.enc"] = blob
    media_server.statuses["/v/gone.enc"] = 410
    media_server.held.add("/v/slow.enc")
    big = os.urandom(6000)
    cases = {
        "OK": media_message("/v/ok.enc", photo, blob, key),
        "GONE": media_message("/v/gone.enc", photo, blob, key),
        "SLOW": media_message("/v/slow.enc", photo, blob, key),
        "BIG": media_message("/v/big.enc", big, encrypt_media("image", big, key), key),
    }
    pid = driver.session_pid(device)

    for msg_id, content in cases.items():
        await inject(
            driver,
            device,
            "MessageEv",
            fields=message_ev(msg_id, {"Chat": PHONE, "Sender": PHONE}, content),
        )

    await eventually(lambda: len(events.media[device]) == 4, timeout=15)
    messages = {m.wa_message_id: m for m, _ in events.messages[device]}
    assert set(messages) == set(cases)
    announced = messages["OK"]
    assert announced.type == "image" and announced.body == "foto" and announced.media is None
    assert announced.media_info is not None
    assert announced.media_info.mime_type == "image/jpeg" and announced.media_info.size == 3000
    outcomes = {o.wa_message_id: o for o in events.media[device]}
    ready = outcomes["OK"]
    assert ready.status == "ready" and ready.media is not None, ready
    assert ready.media.data == photo and ready.media.mime_type == "image/jpeg"
    assert outcomes["GONE"].status == "failed" and not outcomes["GONE"].retryable
    assert "410" in (outcomes["GONE"].error or "")
    slow = outcomes["SLOW"]
    assert slow.status == "failed" and slow.retryable and "longer than 1 s" in (slow.error or "")
    too_large = outcomes["BIG"]
    assert too_large.status == "too_large" and "WORKER_MEDIA_MAX_BYTES" in (too_large.error or "")
    assert "/v/big.enc" not in media_server.requests  # refused before downloading
    # every message was published before its file's outcome
    for msg_id in cases:
        assert events.timeline.index(("message", msg_id)) < events.timeline.index(("media", msg_id))
    # the child never waited for a file, and is alive
    assert pid is not None and alive(pid) and driver.child_restarts == 0

    # the slow file is there now: a retry fetches it
    media_server.held.clear()
    media_server.files["/v/slow.enc"] = blob
    info = messages["SLOW"].media_info
    assert info is not None
    await driver.retry_media(device, "SLOW", PHONE["User"], info.mime_type, info.download)
    await eventually(lambda: len(events.media[device]) == 5, timeout=10)
    retried = events.media[device][-1]
    assert retried.wa_message_id == "SLOW" and retried.status == "ready"
    assert retried.media is not None and retried.media.data == photo
