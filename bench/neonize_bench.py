"""Benchmark of the neonize driver, offline (WhatsApp is unreachable here).

    uv run python bench/neonize_bench.py [--devices 200] [--runs 3] [--live 50] [--pairing 20]

* storm: ``--devices`` linked devices (sessions in the store) resume at once, as
  after a worker restart; every dial fails (through a local port that refuses
  connections: the same with or without Internet). Reports, per run, whether this
  process (the worker) survived, the time until every device had its
  ``disconnected`` status, the children used, the peak of PostgreSQL connections
  held in the store's database and the peak RSS (worker + children).
* pairing: ``--pairing`` new devices ask for a QR at once; each pairs in a child
  of its own, ``pairing_children`` at a time; every dial fails.
* race: in one child holding 10 sessions, clients connect on many threads while
  another reads ``is_connected`` (a test hook): Go aborts that child with
  ``fatal error: concurrent map …``; the worker survives and reports them.
* live: ``--live`` sessions whose dial hangs behind a proxy that never answers
  (they stay up, like connected sessions): RSS per session, PostgreSQL
  connections held; then one child is killed with SIGKILL and the time until its
  sessions are reported is measured.

Uses a scratch database on ``--admin-url``'s server, dropped at the end; every
setting is passed explicitly (CLARIN_* variables and `.env` change nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import benchenv

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
from clarin_common.logging import configure_logging
from clarin_devices.worker.drivers import InboundMedia, MediaOutcome
from clarin_devices.worker.drivers.neonize_driver import NeonizeConfig, NeonizeDriver

# the host with test-only operations (the race scenario breaks the rules on purpose)
TEST_HOST = (
    sys.executable,
    str(Path(__file__).resolve().parents[1] / "services/devices/tests/neonize_test_host.py"),
)


class Recorder:
    def __init__(self) -> None:
        self.terminal: dict[str, list[str]] = defaultdict(list)

    async def on_qr(self, device_id: str, code: str, expires_at: datetime) -> None:
        pass

    async def on_status(self, device_id: str, status: str, **data: Any) -> None:
        if status in ("disconnected", "error", "logged_out"):
            self.terminal[device_id].append(str(data.get("error")))

    async def on_message(
        self, device_id: str, message: WaMessage, media: InboundMedia | None
    ) -> None:
        pass

    async def on_receipt(self, device_id: str, receipt: WaReceipt) -> None:
        pass

    async def on_media(self, device_id: str, outcome: MediaOutcome) -> None:
        pass

    async def on_edit(self, device_id: str, edit: WaEdit) -> None:
        pass

    async def on_revoke(self, device_id: str, revoke: WaRevoke) -> None:
        pass

    async def on_reaction(self, device_id: str, reaction: WaReaction) -> None:
        pass

    async def on_presence(self, device_id: str, presence: WaPresence) -> None:
        pass

    async def on_history(self, device_id: str, history: WaHistory) -> None:
        pass


async def store_sessions(database_url: str, count: int) -> list[str]:
    """``count`` whatsmeow_device rows as pairings leave them (keys are filler)."""
    conn = await asyncpg.connect(database_url)
    try:
        columns = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'devices_wa' AND table_name = 'whatsmeow_device' "
            "AND is_nullable = 'NO' AND column_default IS NULL"
        )
        base = uuid.uuid4().int % 10**4
        jids = [f"521{base:04d}{i:06d}:3@s.whatsapp.net" for i in range(count)]
        for jid in jids:
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
            params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
            await conn.execute(
                f"INSERT INTO devices_wa.whatsmeow_device ({', '.join(values)}) VALUES ({params})",
                *values.values(),
            )
        return jids
    finally:
        await conn.close()


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def total_rss_mb(driver: NeonizeDriver) -> float:
    return (rss_kb(os.getpid()) + sum(rss_kb(p) for p in driver.child_pids())) / 1024


async def pg_connections(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    )


def refusing_port() -> tuple[socket.socket, int]:
    """A port bound and never listened on: a dial through it is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


def black_hole() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return sock, sock.getsockname()[1]


async def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


async def storm(
    database_url: str, devices: int, budget: int, *, pairing: bool = False
) -> dict[str, Any]:
    refusing, port = refusing_port()
    driver = NeonizeDriver(
        database_url,
        NeonizeConfig(
            max_store_connections=budget,
            log_level="WARNING",
            proxy=f"http://127.0.0.1:{port}",  # never WhatsApp itself
        ),
    )
    await driver.start()
    events = Recorder()
    ids = [str(uuid.uuid4()) for _ in range(devices)]
    jids: list[str | None] = (
        [None] * devices if pairing else list(await store_sessions(database_url, devices))
    )
    conn = await asyncpg.connect(database_url)
    baseline = await pg_connections(conn)
    peak_pg, peak_rss, pids = 0, 0.0, set()
    sampling = True

    async def sample() -> None:
        nonlocal peak_pg, peak_rss
        while sampling:
            peak_pg = max(peak_pg, await pg_connections(conn) - baseline)
            pids.update(driver.child_pids())
            peak_rss = max(peak_rss, total_rss_mb(driver))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    results = await asyncio.gather(
        *(driver.connect(d, j, events) for d, j in zip(ids, jids, strict=True)),
        return_exceptions=True,
    )
    done = await wait_until(lambda: all(events.terminal[d] for d in ids), timeout=180)
    elapsed = time.monotonic() - started
    sampling = False
    await sampler
    # still answering after the storm?
    late = str(uuid.uuid4())
    await driver.connect(late, None, events)
    answering = await wait_until(lambda: bool(events.terminal[late]), timeout=30)
    await driver.stop()
    await conn.close()
    refusing.close()
    return {
        "worker_alive": True,  # we are the worker: reaching this line is the proof
        "all_reported": done,
        "exactly_one_status_each": all(len(events.terminal[d]) == 1 for d in ids),
        "connect_errors": sum(1 for r in results if isinstance(r, BaseException)),
        "seconds": round(elapsed, 1),
        "children": len(pids),
        "pg_connections_peak": peak_pg,
        "pg_budget": budget,
        "rss_peak_mb": round(peak_rss),
        "answering_after": answering,
        "child_restarts": driver.child_restarts,
    }


async def live(database_url: str, sessions: int, budget: int) -> dict[str, Any]:
    sock, port = black_hole()
    driver = NeonizeDriver(
        database_url,
        NeonizeConfig(
            max_store_connections=budget,
            proxy=f"http://127.0.0.1:{port}",
            settle_timeout=0.2,
            connect_timeout=3600,
            log_level="WARNING",
        ),
    )
    await driver.start()
    before = total_rss_mb(driver)
    events = Recorder()
    ids = [str(uuid.uuid4()) for _ in range(sessions)]
    jids = await store_sessions(database_url, sessions)
    conn = await asyncpg.connect(database_url)
    baseline = await pg_connections(conn)
    started = time.monotonic()
    await asyncio.gather(*(driver.connect(d, j, events) for d, j in zip(ids, jids, strict=True)))
    up = time.monotonic() - started
    await asyncio.sleep(1)
    held = await pg_connections(conn) - baseline
    rss = total_rss_mb(driver)
    children = driver.child_pids()
    victim = driver.session_pid(ids[0])
    assert victim is not None
    on_victim = [d for d in ids if driver.session_pid(d) == victim]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    reported = await wait_until(lambda: all(events.terminal[d] for d in on_victim), timeout=30)
    report_seconds = time.monotonic() - killed_at
    others_untouched = all(not events.terminal[d] for d in ids if d not in on_victim)
    await driver.stop()
    await conn.close()
    sock.close()
    return {
        "sessions": sessions,
        "seconds_to_start_all": round(up, 1),
        "children": len(children),
        "rss_total_mb": round(rss),
        "rss_per_session_mb": round((rss - before) / sessions, 2),
        "rss_per_child_mb": round((rss - rss_kb(os.getpid()) / 1024) / max(1, len(children))),
        "pg_connections_held": held,
        "sigkill_sessions_reported": reported,
        "sigkill_report_seconds": round(report_seconds, 2),
        "sigkill_others_untouched": others_untouched,
    }


async def race(database_url: str) -> dict[str, Any]:
    """Break the rule on purpose in one child (test hook): clients connect on
    many threads while another reads is_connected. Go aborts that process; the
    worker (this process) must survive and report the child's sessions."""
    sock, port = black_hole()
    driver = NeonizeDriver(
        database_url,
        NeonizeConfig(
            proxy=f"http://127.0.0.1:{port}",
            settle_timeout=0.2,
            connect_timeout=3600,
            host_command=TEST_HOST,
            log_level="WARNING",
        ),
    )
    await driver.start()
    events = Recorder()
    ids = [str(uuid.uuid4()) for _ in range(10)]
    for device, jid in zip(ids, await store_sessions(database_url, 10), strict=True):
        await driver.connect(device, jid, events)
    held = driver.session(ids[0])
    assert held is not None
    child = held.child
    started = time.monotonic()
    outcome = "no crash"
    try:
        await driver.pool.request(child, "debug_race", clients=50, seconds=20, timeout=60)
    except Exception as exc:
        outcome = type(exc).__name__
    reported = await wait_until(lambda: all(events.terminal[d] for d in ids), timeout=10)
    errors = {events.terminal[d][0] for d in ids if events.terminal[d]}
    late = str(uuid.uuid4())
    await driver.connect(late, None, events)
    answering = driver.session_pid(late) not in (None, child.pid)
    await driver.stop()
    sock.close()
    return {
        "outcome": outcome,
        "seconds": round(time.monotonic() - started, 1),
        "sessions_reported": reported,
        "errors": sorted(errors),
        "worker_alive": True,
        "new_child_serves": answering,
    }


async def main() -> None:
    configure_logging("WARNING", json=False, service="neonize-bench")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin-url", default=benchenv.DEFAULT_POSTGRES)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--live", type=int, default=50)
    parser.add_argument("--budget", type=int, default=60, help="max_store_connections")
    parser.add_argument("--race", type=int, default=2, help="runs of the Go crash scenario")
    parser.add_argument("--pairing", type=int, default=20, help="new devices pairing at once")
    args = parser.parse_args()
    benchenv.isolate()  # the driver's children inherit this environment
    name = f"clarin_bench_neonize_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    database_url = with_database(args.admin_url, name)
    try:
        # the raw ceiling of this host today: one device alone, same path
        alone = await storm(database_url, 1, args.budget)
        print(f"one device alone (ceiling): {alone['seconds']} s until reported")
        for run in range(1, args.runs + 1):
            result = await storm(database_url, args.devices, args.budget)
            print(f"storm run {run}: {args.devices} devices connecting at once: {result}")
        if args.pairing:
            result = await storm(database_url, args.pairing, args.budget, pairing=True)
            print(f"pairing: {args.pairing} new devices at once: {result}")
        for run in range(1, args.race + 1):
            print(f"race run {run}: {await race(database_url)}")
        if args.live:
            result = await live(database_url, args.live, max(args.budget, args.live + 30))
            print(f"live: {result}")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
