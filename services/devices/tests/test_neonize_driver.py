"""The neonize driver, offline: WhatsApp cannot be reached from here, so every
connect fails to dial at once — or, behind a "black hole" proxy that accepts and
never answers, hangs for good (the hazard that makes ``stop()`` hang too).

Sessions run in child processes; these tests check that what goes wrong there
(crashes, kills, hung calls, leaked DB pools, bad JIDs) costs a child and is
reported, never the worker process running the driver (this test process).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from clarin_common.events import WaMessage, WaReceipt
from clarin_devices.worker.drivers import DriverError, InboundMedia, NotConnected
from clarin_devices.worker.drivers.neonize_driver import NeonizeConfig, NeonizeDriver, store_dsn
from clarin_devkit.testing import eventually

pytestmark = pytest.mark.usefixtures("clean_state")

# 200 at once takes 15-20 s here (children start one after the other under the
# store budget, and the offline DNS sometimes answers after 5 s); lower it with
# CLARIN_NEONIZE_STORM on a slower machine. bench/neonize_bench.py repeats it.
STORM = int(os.environ.get("CLARIN_NEONIZE_STORM", "200"))


class Recorder:
    """DriverEvents that remembers everything it is told."""

    def __init__(self) -> None:
        self.statuses: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self.qrs: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
        self.messages: dict[str, list[tuple[WaMessage, InboundMedia | None]]] = defaultdict(list)
        self.receipts: dict[str, list[WaReceipt]] = defaultdict(list)

    async def on_qr(self, device_id: str, code: str, expires_at: datetime) -> None:
        self.qrs[device_id].append((code, expires_at))

    async def on_status(self, device_id: str, status: str, **data: Any) -> None:
        self.statuses[device_id].append((status, data))

    async def on_message(
        self, device_id: str, message: WaMessage, media: InboundMedia | None
    ) -> None:
        self.messages[device_id].append((message, media))

    async def on_receipt(self, device_id: str, receipt: WaReceipt) -> None:
        self.receipts[device_id].append(receipt)

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
        "test_hooks": True,
        "log_level": "WARNING",
    }
    base.update(overrides)
    return NeonizeConfig(**base)


@pytest.fixture
async def make_driver(test_servers: Any) -> AsyncIterator[Any]:
    drivers: list[NeonizeDriver] = []

    async def make(**overrides: Any) -> NeonizeDriver:
        driver = NeonizeDriver(test_servers.database_url, config(**overrides))
        drivers.append(driver)
        await driver.start()
        return driver

    yield make
    for driver in drivers:
        await driver.stop()


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
    make_driver: Any, test_servers: Any
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
    make_driver: Any,
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


async def test_a_storm_of_connects_leaves_the_worker_alive_and_the_store_bounded(
    make_driver: Any, test_servers: Any
) -> None:
    budget = 40  # the PostgreSQL here is shared (max_connections 100)
    driver = await make_driver(max_store_connections=budget)
    events = Recorder()
    devices = [new_id() for _ in range(STORM)]
    conn = await asyncpg.connect(test_servers.database_url)
    baseline = await store_connections(conn)
    peak = baseline
    peak_rss = 0
    pids: set[int] = set()

    async def sample() -> None:
        nonlocal peak, peak_rss
        while True:
            peak = max(peak, await store_connections(conn))
            children = driver.child_pids()
            pids.update(children)
            peak_rss = max(peak_rss, rss_kb(os.getpid()) + sum(rss_kb(p) for p in children))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    try:
        await asyncio.gather(*(driver.connect(d, None, events) for d in devices))
        await eventually(lambda: all(events.terminal(d) for d in devices), timeout=90)
    finally:
        sampler.cancel()
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
        f"\n{STORM} failed connects: {elapsed:.1f} s, {len(pids)} children, "
        f"store connections peak {peak - baseline} (budget {budget}), "
        f"RSS peak {peak_rss / 1024:.0f} MB"
    )


async def test_a_jid_missing_from_the_store_is_refused_without_a_crash(
    make_driver: Any,
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


async def test_a_stored_jid_resumes_that_session(make_driver: Any, test_servers: Any) -> None:
    driver = await make_driver()
    await store_fake_session(test_servers.database_url, "5215550002222:4@s.whatsapp.net")
    events = Recorder()
    device = new_id()

    # the worker may have kept the JID without its device part: same number
    await driver.connect(device, "5215550002222@s.whatsapp.net", events)

    await eventually(lambda: events.terminal(device), timeout=15)
    [(status, data)] = events.terminal(device)
    assert status == "disconnected" and "dial" in data["error"]
    with pytest.raises(DriverError) as raised:
        other = Recorder()
        await driver.connect(new_id(), "5215550009999@s.whatsapp.net", other)
    assert raised.value.code == "session_not_found"


async def test_commands_to_a_device_that_never_connected_raise_not_connected(
    make_driver: Any,
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
    assert driver.is_connected(device) is False
    await driver.disconnect(device)  # nothing to do, no error
    await driver.logout(device)


# ---- sessions that hang, children that die -----------------------------------------------


async def test_a_killed_child_reports_its_sessions_and_a_new_child_serves_later_connects(
    make_driver: Any, black_hole: BlackHole
) -> None:
    driver = await make_driver(proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3)
    events = Recorder()
    first, second = new_id(), new_id()
    await driver.connect(first, None, events)
    await driver.connect(second, None, events)
    pid = driver.session_pid(first)
    assert pid is not None and driver.session_pid(second) == pid
    assert events.terminal(first) == [] and events.terminal(second) == []  # hanging

    os.kill(pid, signal.SIGKILL)

    await eventually(lambda: events.terminal(first) and events.terminal(second), timeout=10)
    for device in (first, second):
        [(status, data)] = events.terminal(device)
        assert status == "disconnected"
        assert f"pid {pid}" in data["error"] and "signal 9" in data["error"]
    later = new_id()
    await driver.connect(later, None, events)
    new_pid = driver.session_pid(later)
    assert new_pid is not None and new_pid != pid and alive(new_pid)


async def test_a_stop_that_hangs_gets_its_child_killed_and_replaced(
    make_driver: Any, black_hole: BlackHole
) -> None:
    # neonize's stop() never returns while a dial hangs (measured): the call
    # hangs in Go, the watchdog kills the child after call_timeout.
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=1.5
    )
    events = Recorder()
    leaving, bystander = new_id(), new_id()
    await driver.connect(leaving, None, events)
    await driver.connect(bystander, None, events)
    pid = driver.session_pid(leaving)
    assert pid is not None

    started = time.monotonic()
    await asyncio.wait_for(driver.disconnect(leaving), timeout=10)

    assert time.monotonic() - started < 8
    await eventually(lambda: events.terminal(bystander), timeout=5)
    [(status, data)] = events.terminal(bystander)
    assert status == "disconnected" and "hung" in data["error"]
    assert events.terminal(leaving) == []  # the caller asked for it: no event
    assert not alive(pid)
    later = new_id()
    await driver.connect(later, None, events)
    assert driver.session_pid(later) not in (None, pid)


async def test_a_child_busy_past_the_call_timeout_is_replaced(
    make_driver: Any, black_hole: BlackHole
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=1.0
    )
    events = Recorder()
    device = new_id()
    await driver.connect(device, None, events)
    session = driver._sessions[device]
    pid = session.child.pid

    # a test-only hook: the child's lane sleeps as a hung Go call would
    with pytest.raises(DriverError) as raised:
        await driver._request(session.child, "debug_sleep", seconds=30, timeout=15)

    assert raised.value.code == "driver_crashed"
    await eventually(lambda: events.terminal(device), timeout=5)
    assert "hung" in events.terminal(device)[0][1]["error"]
    assert pid is not None and not alive(pid)


# ---- events from WhatsApp, as neonize hands them over -----------------------------------


async def test_events_are_mapped_to_driver_events(make_driver: Any, black_hole: BlackHole) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=2.0
    )
    events = Recorder()
    device = new_id()
    await driver.connect(device, None, events)
    session = driver._sessions[device]

    async def inject(event: str, **fields: Any) -> None:
        await driver._request(
            session.child, "debug_inject", sid=session.sid, event=event, timeout=10, **fields
        )

    await inject("qr", code="2@abc,def")
    await inject(
        "MessageEv",
        fields={
            "Info": {
                "ID": "3EB0AAA",
                "Pushname": "Ana",
                "Timestamp": "1700000000000",
                "MessageSource": {
                    "Chat": {"User": "5215512345678", "Server": "s.whatsapp.net"},
                    "Sender": {"User": "5215512345678", "Device": 3, "Server": "s.whatsapp.net"},
                },
            },
            "Message": {"conversation": "hola"},
        },
    )
    await inject(
        "MessageEv",
        fields={
            "Info": {
                "ID": "3EB0BBB",
                "Timestamp": "1700000001",
                "MessageSource": {
                    "Chat": {"User": "5215512345678", "Server": "s.whatsapp.net"},
                    "IsFromMe": True,
                },
            },
            "Message": {"imageMessage": {"caption": "foto", "mimetype": "image/jpeg"}},
        },
    )
    await inject(
        "MessageEv",
        fields={
            "Info": {"ID": "3EB0CCC", "MessageSource": {"Chat": {"User": "1", "Server": "s"}}},
            "Message": {"senderKeyDistributionMessage": {"groupID": "g"}},
        },
    )
    await inject(
        "ReceiptEv",
        fields={
            "MessageIDs": ["3EB0X", "3EB0Y"],
            "Type": "READ",
            "Timestamp": "1700000002",
            "MessageSource": {"Chat": {"User": "5215512345678", "Server": "s.whatsapp.net"}},
        },
    )

    await eventually(lambda: len(events.messages[device]) == 2 and events.receipts[device], 10)
    assert [s for s, _ in events.statuses[device]] == ["qr_pending"]
    [(code, expires_at)] = events.qrs[device]
    assert code == "2@abc,def" and expires_at > datetime.now(UTC)
    (text, no_media), (image, media) = events.messages[device]
    assert text.wa_message_id == "3EB0AAA" and text.body == "hola" and text.type == "text"
    assert text.direction == "in" and text.push_name == "Ana"
    assert text.chat_jid == "5215512345678@s.whatsapp.net"
    assert text.sender_jid == "5215512345678@s.whatsapp.net"
    assert text.sent_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert no_media is None
    # the download fails offline: the message is kept, without its bytes
    assert image.type == "image" and image.body == "foto" and image.direction == "out"
    assert image.sent_at == datetime(2023, 11, 14, 22, 13, 21, tzinfo=UTC)
    assert media is None
    [receipt] = events.receipts[device]
    assert receipt.status == "read" and receipt.wa_message_ids == ["3EB0X", "3EB0Y"]
    # a QR is pending but the socket is not live (the proxy never answers):
    # PairPhone hangs in Go, the watchdog kills the child, the call fails
    with pytest.raises(DriverError) as raised:
        await driver.pair_phone(device, "5215512345678")
    assert raised.value.code == "driver_crashed"


async def test_a_go_crash_costs_one_child_and_its_sessions_are_reported(
    make_driver: Any, black_hole: BlackHole
) -> None:
    driver = await make_driver(proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3)
    events = Recorder()
    bystander = new_id()
    await driver.connect(bystander, None, events)
    session = driver._sessions[bystander]
    pid = session.child.pid
    assert pid is not None

    # what the driver's JID check prevents: Go dereferences nil and aborts
    with pytest.raises(DriverError) as raised:
        await driver._request(
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
    later = new_id()
    await driver.connect(later, None, events)
    assert driver.session_pid(later) not in (None, pid)


async def test_unlinked_from_the_phone_reports_logged_out_and_forgets_the_session(
    make_driver: Any, black_hole: BlackHole, test_servers: Any
) -> None:
    jid = "5215550004444:2@s.whatsapp.net"
    await store_fake_session(test_servers.database_url, jid)
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=1.5
    )
    events = Recorder()
    device = new_id()
    await driver.connect(device, jid, events)
    session = driver._sessions[device]

    await driver._request(
        session.child,
        "debug_inject",
        sid=session.sid,
        event="LoggedOutEv",
        fields={"OnConnect": False, "Reason": "LOGGED_OUT"},
        timeout=10,
    )

    await eventually(lambda: events.terminal(device), timeout=10)
    [(status, data)] = events.terminal(device)
    assert status == "logged_out" and data["jid"] == jid
    await eventually(lambda: _gone(test_servers.database_url, jid), timeout=10)
    with pytest.raises(DriverError) as raised:
        await driver.connect(device, jid, events)
    assert raised.value.code == "session_not_found"


async def _gone(database_url: str, jid: str) -> bool:
    return jid not in await stored_jids(database_url)
