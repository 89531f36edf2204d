"""Device workers under load, with the simulator driver.

Starts N worker processes (``python -m clarin_devices.worker.main``,
``WHATSAPP_DRIVER=simulator``), creates DEVICES devices, connects them all and
reports the time until every device is ``connected``, the median time to the
first QR, the workers' RSS per device (VmRSS before the devices and after they
are all connected) and their CPU, and with ``--drop-all`` the time until all are
back after every connection drops at once.

Two ways to connect (``--mode``):

* ``qr`` (default): every device new; each is connected through the devices API
  (``POST /api/devices/{id}/connect``, in-process) and its first QR scanned
  (``sim.{id}.scan``) as it arrives: the whole path of a user linking a number.
* ``linked``: every device already linked (a stored session, as after a restart);
  all are asked to connect at once by one ``UPDATE`` of their desired state and
  one ``devices.changed``: what the workers alone take, no API, no QR.
* ``both``: ``qr`` then ``linked``, each with its own workers, database and ceiling.

The raw ceiling, measured in the same run once the workers have stopped: the
NATS operations the workers make for each device while connecting, done by this
process alone against the same server with the workers' concurrency (a lease
``create`` in a KV bucket and the JetStream publishes of the status and QR
events), and the status ``UPDATE`` statements on the same table.

    uv run python bench/devices_bench.py --devices 500 --workers 2 --drop-all

Uses the PostgreSQL server of ``--pg`` (a throw-away database is created and
dropped) and a private NATS server started for the run, or the one of ``--nats``
(its own KV buckets; events go to WA_EVENTS, so never a shared one). Every setting
is passed explicitly: a `.env` or CLARIN_* variables around it change nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import benchenv
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from clarin_common import nats as natsmod
from clarin_common.db import with_database
from clarin_common.events import WaQr, WaStatus, wa_envelope, wa_event_subject
from clarin_common.logging import configure_logging
from clarin_common.settings import DEV_JWT_PUBLIC_KEY
from clarin_devkit.testing import auth_headers, free_port, make_token, running_app

CONCURRENCY = 64  # the workers' lease concurrency (worker.LEASE_CONCURRENCY)
# what a worker publishes for a device while connecting it: status events (two
# subjects each) and, for a new device, its first QR code
PUBLISHES = {"qr": 5, "linked": 2}  # qr_pending 2, qr, connected 2 | connected 2
STATUS_UPDATES = {"qr": 3, "linked": 2}  # qr_pending, set_qr, connected | connecting, connected


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = benchenv.isolate()
    configure_logging(
        "WARNING", json=False, service="devices-bench"
    )  # stderr: stdout is the result
    modes = ["qr", "linked"] if args.mode == "both" else [args.mode]
    results = []
    with benchenv.servers(args.nats) as servers:
        for mode in modes:
            results.append(await run(args, mode, servers.nats_url, workdir))
    if len(results) == 1:
        return results[0]
    # the QR run's keys at the top (what `make bench` reads), the linked run beside
    return {**results[0], "linked": results[1]}


async def run(args: argparse.Namespace, mode: str, nats_url: str, workdir: Path) -> dict[str, Any]:
    admin_url = with_database(args.pg, "postgres")
    db_name = f"clarin_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    database_url = with_database(args.pg, db_name)
    run_id = uuid.uuid4().hex[:6]
    env = {
        **benchenv.clean_environ(),
        "CLARIN_ENV": "dev",
        "CLARIN_DATABASE_URL": database_url,
        "CLARIN_NATS_URL": nats_url,
        "CLARIN_LOG_LEVEL": "WARNING",
        "WHATSAPP_DRIVER": "simulator",
        "WORKER_MEMBERS_BUCKET": f"bench_workers_{run_id}",
        "WORKER_LEASES_BUCKET": f"bench_leases_{run_id}",
        "WORKER_RECONNECT_STAGGER_SECONDS": str(args.stagger),
        "WORKER_DB_POOL_MAX": "10",
    }
    os.environ.update({k: env[k] for k in ("CLARIN_DATABASE_URL", "CLARIN_NATS_URL")})
    procs: list[tuple[str, subprocess.Popen[bytes], int]] = []
    nc = await natsmod.connect(nats_url, name="devices-bench")
    db: asyncpg.Pool | None = None
    try:
        # the API first: it applies the migrations
        from clarin_devices.main import create_app
        from clarin_devices.settings import DevicesSettings

        settings = DevicesSettings(
            _env_file=None,
            env="dev",
            database_url=database_url,
            nats_url=nats_url,
            jwt_public_key=DEV_JWT_PUBLIC_KEY,  # make_token signs with the dev key
            log_level="WARNING",
        )
        app = create_app(settings)
        async with running_app(app) as client:
            db = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
            assert db is not None
            account_id = str(uuid.uuid4())
            headers = auth_headers(make_token(account_id=account_id))
            # the devices themselves are not what is measured: one INSERT
            device_uuids = [uuid.uuid4() for _ in range(args.devices)]
            device_ids = [str(d) for d in device_uuids]
            phones = [f"52{int(d) % 10**11:011d}" for d in device_uuids]
            await db.execute(
                """
                INSERT INTO devices.devices (id, account_id, name, jid, phone)
                SELECT id, $2, 'bench ' || n, jid, phone
                FROM unnest($1::uuid[], $3::text[], $4::text[]) WITH ORDINALITY
                     AS t(id, jid, phone, n)
                """,
                device_uuids,
                account_id,
                [f"{p}@s.whatsapp.net" if mode == "linked" else None for p in phones],
                [p if mode == "linked" else None for p in phones],
            )
            for i in range(args.workers):
                port = free_port()
                worker_id = f"bench-{run_id}-{i + 1}"
                proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the clock
                    [sys.executable, "-m", "clarin_devices.worker.main"],
                    env={**env, "WORKER_ID": worker_id, "WORKER_PORT": str(port)},
                    cwd=workdir,  # no .env there
                )
                procs.append((worker_id, proc, port))
            for _, proc, port in procs:
                await benchenv.wait_ready(port, proc)
            await asyncio.sleep(1.0)  # let the heap settle after start-up
            rss_before = {w: vm_rss_kib(p.pid) for w, p, _ in procs}

            wanted = set(device_ids)
            phone_of = dict(zip(device_ids, phones, strict=True))
            connected: set[str] = set()
            scanned: set[str] = set()
            qr_first: dict[str, float] = {}
            all_connected = asyncio.Event()
            scan_tasks: set[asyncio.Task[None]] = set()
            scan_failures: list[str] = []

            async def scan(device_id: str) -> None:
                payload = json.dumps({"phone": phone_of[device_id]}).encode()
                for _ in range(5):
                    try:
                        reply = await nc.request(f"sim.{device_id}.scan", payload, 10)
                        if json.loads(reply.data).get("ok"):
                            return
                    except Exception as exc:
                        scan_failures.append(repr(exc))
                    await asyncio.sleep(0.5)

            async def on_event(msg: Msg) -> None:
                device_id = msg.subject.split(".")[3]
                if device_id not in wanted:
                    return
                if msg.subject.endswith(".qr") and device_id not in scanned:
                    scanned.add(device_id)
                    qr_first[device_id] = time.monotonic()
                    task = asyncio.create_task(scan(device_id))
                    scan_tasks.add(task)
                    task.add_done_callback(scan_tasks.discard)
                elif msg.subject.endswith(".status"):
                    status = json.loads(msg.data)["data"]["status"]
                    if status == "connected":
                        connected.add(device_id)
                        if connected >= wanted:
                            all_connected.set()

            subs = [
                await nc.subscribe("wa.evt.*.*.qr", cb=on_event, pending_msgs_limit=-1),
                await nc.subscribe("wa.evt.*.*.status", cb=on_event, pending_msgs_limit=-1),
            ]
            await nc.flush()

            cpu_before = {w: cpu_seconds(p.pid) for w, p, _ in procs}
            own_cpu_before = cpu_seconds(os.getpid())
            load_before = load_average()
            started = time.monotonic()
            requests_done: float | None = None
            if mode == "qr":
                gate = asyncio.Semaphore(32)

                async def connect(device_id: str) -> None:
                    async with gate:
                        resp = await client.post(
                            f"/api/devices/{device_id}/connect", headers=headers
                        )
                        resp.raise_for_status()

                await asyncio.gather(*(connect(d) for d in device_ids))
                requests_done = round(time.monotonic() - started, 2)
            else:
                await db.execute(
                    "UPDATE devices.devices SET desired_state = 'connected', status = 'connecting'"
                    " WHERE id = ANY($1::uuid[])",
                    device_uuids,
                )
                await nc.publish("devices.changed", b'{"reason": "bench", "device_id": null}')
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_connected.wait(), args.timeout)
            elapsed = time.monotonic() - started
            cpu_connect = sum(cpu_seconds(p.pid) - cpu_before[w] for w, p, _ in procs)
            own_cpu_connect = cpu_seconds(os.getpid()) - own_cpu_before
            load_after = load_average()
            qr_times = sorted(t - started for t in qr_first.values())
            connected_count = len(connected)
            await asyncio.sleep(2.0)  # connected and idle: what holding them costs
            rss_after = {w: vm_rss_kib(p.pid) for w, p, _ in procs}
            idle_cpu_before = {w: cpu_seconds(p.pid) for w, p, _ in procs}
            idle_started = time.monotonic()
            await asyncio.sleep(args.idle)  # lease renewals and heartbeats only
            idle_cpu = sum(cpu_seconds(p.pid) - idle_cpu_before[w] for w, p, _ in procs) / (
                time.monotonic() - idle_started
            )
            for sub in subs:
                await sub.unsubscribe()

            # a reconnect storm: drop every connection at once, wait for all back
            reconnect_s: float | None = None
            cpu_reconnect: float | None = None
            if args.drop_all and connected_count == len(wanted):
                connected.clear()
                all_connected.clear()
                subs = [await nc.subscribe("wa.evt.*.*.status", cb=on_event, pending_msgs_limit=-1)]
                await nc.flush()
                drop_cpu_before = {w: cpu_seconds(p.pid) for w, p, _ in procs}
                dropped = time.monotonic()
                drop_gate = asyncio.Semaphore(256)

                async def drop(device_id: str) -> None:
                    async with drop_gate:
                        with contextlib.suppress(Exception):
                            await nc.request(f"sim.{device_id}.drop", b"{}", 10)

                await asyncio.gather(*(drop(d) for d in device_ids))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_connected.wait(), args.timeout)
                if connected >= wanted:
                    reconnect_s = round(time.monotonic() - dropped, 2)
                cpu_reconnect = sum(cpu_seconds(p.pid) - drop_cpu_before[w] for w, p, _ in procs)
                for sub in subs:
                    await sub.unsubscribe()
            peak_rss = {w: vm_rss_kib(p.pid) for w, p, _ in procs}
        benchenv.stop_processes(proc for _, proc, _ in procs)
        procs.clear()

        # the raw ceiling, same servers, the workers gone
        ceiling = await nats_ceiling(nc, args.devices, mode, run_id)
        ceiling_sql = await sql_ceiling(db, device_uuids, STATUS_UPDATES[mode])

        per_worker = {
            w: {
                "rss_before_mib": round(rss_before[w] / 1024, 1),
                "rss_after_mib": round(rss_after[w] / 1024, 1),
                "rss_after_drop_mib": round(peak_rss[w] / 1024, 1),
            }
            for w in rss_before
        }
        growth_kib = sum(rss_after.values()) - sum(rss_before.values())
        connect_all = round(elapsed, 2) if connected_count == len(wanted) else None
        return {
            "devices": args.devices,
            "workers": args.workers,
            "mode": mode,
            "connected": connected_count,
            "connect_all_s": connect_all,
            "reconnect_all_s": reconnect_s,
            "rss_per_device_kb": round(growth_kib / max(1, args.devices), 1),
            "first_qr_median_s": round(qr_times[len(qr_times) // 2], 2) if qr_times else None,
            "api_connect_requests_s": requests_done,
            "worker_cpu_connect_s": round(cpu_connect, 2),
            "worker_cpu_ms_per_device": round(1000 * cpu_connect / max(1, args.devices), 2),
            "worker_idle_cpu_pct": round(100 * idle_cpu, 1),
            "worker_cpu_reconnect_s": None if cpu_reconnect is None else round(cpu_reconnect, 2),
            # this process while connecting: the devices API (qr mode) and the event handling
            "bench_cpu_connect_s": round(own_cpu_connect, 2),
            "ceiling_nats_s": ceiling["seconds"],
            "ceiling_nats_ops": ceiling["ops"],
            "ceiling_sql_s": ceiling_sql,
            "connect_all_over_ceiling": (
                round(connect_all / ceiling["seconds"], 1) if connect_all else None
            ),
            "load_avg_before_after": [load_before, load_after],
            "stagger_s": args.stagger,
            "per_worker": per_worker,
            "scan_retries": len(scan_failures),
        }
    finally:
        benchenv.stop_processes(proc for _, proc, _ in procs)
        if db is not None:
            await db.close()
        js = nc.jetstream()
        for bucket in (env["WORKER_MEMBERS_BUCKET"], env["WORKER_LEASES_BUCKET"]):
            with contextlib.suppress(Exception):
                await js.delete_key_value(bucket)
        await nc.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()


async def nats_ceiling(nc: NatsClient, devices: int, mode: str, run_id: str) -> dict[str, Any]:
    """What the workers ask of NATS per device while connecting, done alone by
    this process: a lease ``create`` in a KV bucket and the status (and QR)
    publishes to WA_EVENTS, ``CONCURRENCY`` devices at a time."""
    js = nc.jetstream()
    bucket = f"bench_ceiling_{run_id}"
    kv = await natsmod.ensure_kv(js, bucket, ttl=15.0)
    account_id = str(uuid.uuid4())
    gate = asyncio.Semaphore(CONCURRENCY)
    publishes = PUBLISHES[mode]

    async def one(device_id: str) -> None:
        async with gate:
            await kv.create(device_id, b"ceiling")
            items = []
            for i in range(publishes):
                if mode == "qr" and i == 2:
                    payload: Any = WaQr(code="x" * 160, expires_at=datetime.now(UTC))
                    items.append(
                        (
                            wa_event_subject(account_id, device_id, "qr"),
                            wa_envelope(account_id, device_id, "qr", payload),
                        )
                    )
                else:
                    status = WaStatus(status="connected", worker_id="ceiling")
                    items.append(
                        (
                            wa_event_subject(account_id, device_id, "status"),
                            wa_envelope(account_id, device_id, "status", status),
                        )
                    )
            await natsmod.publish_events(js, items)

    started = time.monotonic()
    await asyncio.gather(*(one(str(uuid.uuid4())) for _ in range(devices)))
    seconds = round(time.monotonic() - started, 2)
    with contextlib.suppress(Exception):
        await js.delete_key_value(bucket)
    return {"seconds": seconds, "ops": devices * (1 + publishes)}


async def sql_ceiling(db: asyncpg.Pool | None, ids: list[uuid.UUID], per_device: int) -> float:
    """The workers' status writes on the same rows (one ``UPDATE`` each, the
    workers' pool size at a time), alone."""
    assert db is not None
    gate = asyncio.Semaphore(10)

    async def one(device_id: uuid.UUID) -> None:
        async with gate:
            for _ in range(per_device):
                await db.execute(
                    "UPDATE devices.devices SET status = 'connected', updated_at = now()"
                    " WHERE id = $1",
                    device_id,
                )

    started = time.monotonic()
    await asyncio.gather(*(one(d) for d in ids))
    return round(time.monotonic() - started, 2)


def markdown(result: dict[str, Any]) -> str:
    rows = [
        (
            "devices / workers / mode",
            f"{result['devices']} / {result['workers']} / {result['mode']}",
        ),
        ("connected", str(result["connected"])),
        ("time to all connected", f"{result['connect_all_s']} s"),
        ("API connect requests done after", f"{result['api_connect_requests_s']} s"),
        ("first QR, median after connect", f"{result['first_qr_median_s']} s"),
        ("all back after dropping every connection", f"{result['reconnect_all_s']} s"),
        ("worker RSS per connected device", f"{result['rss_per_device_kb']} KiB"),
        (
            "worker CPU while connecting",
            f"{result['worker_cpu_connect_s']} s ({result['worker_cpu_ms_per_device']} ms/device)",
        ),
        ("worker CPU when idle (all connected)", f"{result['worker_idle_cpu_pct']} % of a core"),
        ("worker CPU during the reconnect", f"{result['worker_cpu_reconnect_s']} s"),
        ("bench process CPU while connecting (API + events)", f"{result['bench_cpu_connect_s']} s"),
        (
            "raw ceiling: the same NATS ops alone",
            f"{result['ceiling_nats_s']} s ({result['ceiling_nats_ops']} ops)",
        ),
        ("raw ceiling: the status UPDATEs alone", f"{result['ceiling_sql_s']} s"),
        ("load average before → after", " → ".join(map(str, result["load_avg_before_after"]))),
    ]
    rows += [
        (
            f"{w} RSS before → connected → after drop",
            f"{v['rss_before_mib']} → {v['rss_after_mib']} → {v['rss_after_drop_mib']} MiB",
        )
        for w, v in result["per_worker"].items()
    ]
    lines = ["| measure | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mode", choices=("qr", "linked", "both"), default="qr")
    parser.add_argument("--pg", default=benchenv.DEFAULT_POSTGRES, help="a PostgreSQL server")
    parser.add_argument("--nats", default=None, help="default: a private nats-server for the run")
    parser.add_argument(
        "--stagger", type=float, default=5.0, help="WORKER_RECONNECT_STAGGER_SECONDS"
    )
    parser.add_argument(
        "--idle", type=float, default=5.0, help="seconds of idle CPU measured (a renew interval)"
    )
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--drop-all", action="store_true", help="also time a reconnect storm")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parsed = parser.parse_args()
    result = asyncio.run(main(parsed))
    print(json.dumps(result, indent=2))
    if not parsed.json:
        print()
        print(markdown(result))
        if "linked" in result:
            print()
            print(markdown(result["linked"]))
