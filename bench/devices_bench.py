"""Device workers under load, with the simulator driver.

Starts N worker processes (``python -m clarin_devices.worker.main``,
``WHATSAPP_DRIVER=simulator``), creates DEVICES devices through the devices API
(in-process), connects them all, scans every QR as it arrives (``sim.{id}.scan``)
and reports the time until every device is ``connected`` and the workers' RSS
per device (VmRSS before the devices and after they are all connected).

    uv run python bench/devices_bench.py --devices 500 --workers 1

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
from pathlib import Path
from typing import Any

import asyncpg
import benchenv
from nats.aio.msg import Msg

from clarin_common import nats as natsmod
from clarin_common.db import with_database
from clarin_common.settings import DEV_JWT_PUBLIC_KEY
from clarin_devkit.testing import auth_headers, free_port, make_token, running_app


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = benchenv.isolate()
    with benchenv.servers(args.nats) as servers:
        return await run(args, servers.nats_url, workdir)


async def run(args: argparse.Namespace, nats_url: str, workdir: Path) -> dict[str, Any]:
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
    try:
        # the API first: it applies the migrations
        from clarin_devices.main import create_app
        from clarin_devices.settings import DevicesSettings

        settings = DevicesSettings(
            _env_file=None,  # type: ignore[call-arg]
            env="dev",
            database_url=database_url,
            nats_url=nats_url,
            jwt_public_key=DEV_JWT_PUBLIC_KEY,  # make_token signs with the dev key
        )
        app = create_app(settings)
        async with running_app(app) as client:
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

            headers = auth_headers(make_token(account_id=str(uuid.uuid4())))
            device_ids: list[str] = []
            gate = asyncio.Semaphore(32)

            async def create(i: int) -> None:
                async with gate:
                    resp = await client.post(
                        "/api/devices", json={"name": f"bench {i}"}, headers=headers
                    )
                    resp.raise_for_status()
                    device_ids.append(resp.json()["id"])

            await asyncio.gather(*(create(i) for i in range(args.devices)))
            wanted = set(device_ids)

            connected: set[str] = set()
            scanned: set[str] = set()
            qr_first: dict[str, float] = {}
            all_connected = asyncio.Event()
            scan_tasks: set[asyncio.Task[None]] = set()
            scan_failures: list[str] = []

            async def scan(device_id: str, phone: str) -> None:
                for _ in range(5):
                    try:
                        reply = await nc.request(
                            f"sim.{device_id}.scan", json.dumps({"phone": phone}).encode(), 10
                        )
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
                    phone = f"52{int(uuid.UUID(device_id)) % 10**11:011d}"
                    task = asyncio.create_task(scan(device_id, phone))
                    scan_tasks.add(task)
                    task.add_done_callback(scan_tasks.discard)
                elif msg.subject.endswith(".status"):
                    status = json.loads(msg.data)["data"]["status"]
                    if status == "connected":
                        connected.add(device_id)
                        if connected >= wanted:
                            all_connected.set()

            subs = [
                await nc.subscribe("wa.evt.*.*.qr", cb=on_event),
                await nc.subscribe("wa.evt.*.*.status", cb=on_event),
            ]
            await nc.flush()

            started = time.monotonic()

            async def connect(device_id: str) -> None:
                async with gate:
                    resp = await client.post(f"/api/devices/{device_id}/connect", headers=headers)
                    resp.raise_for_status()

            await asyncio.gather(*(connect(d) for d in device_ids))
            requests_done = time.monotonic() - started
            try:
                await asyncio.wait_for(all_connected.wait(), args.timeout)
            except TimeoutError:
                pass
            elapsed = time.monotonic() - started
            qr_times = sorted(t - started for t in qr_first.values())
            await asyncio.sleep(2.0)  # connected and idle: what holding them costs
            rss_after = {w: vm_rss_kib(p.pid) for w, p, _ in procs}
            for sub in subs:
                await sub.unsubscribe()

            # a reconnect storm: drop every connection at once, wait for all back
            reconnect_s: float | None = None
            if args.drop_all and len(connected) == len(wanted):
                connected.clear()
                all_connected.clear()
                subs = [await nc.subscribe("wa.evt.*.*.status", cb=on_event)]
                await nc.flush()
                dropped = time.monotonic()
                await asyncio.gather(
                    *(nc.request(f"sim.{d}.drop", b"{}", 10) for d in device_ids),
                    return_exceptions=True,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_connected.wait(), args.timeout)
                reconnect_s = round(time.monotonic() - dropped, 2)
                for sub in subs:
                    await sub.unsubscribe()

            per_worker = {
                w: {
                    "rss_before_mib": round(rss_before[w] / 1024, 1),
                    "rss_after_mib": round(rss_after[w] / 1024, 1),
                }
                for w in rss_before
            }
            growth_kib = sum(rss_after.values()) - sum(rss_before.values())
            return {
                "devices": args.devices,
                "workers": args.workers,
                "connected": len(connected) if reconnect_s is None else len(wanted),
                "connect_requests_s": round(requests_done, 2),
                "time_to_all_connected_s": round(elapsed, 2),
                "first_qr_median_s": round(qr_times[len(qr_times) // 2], 2) if qr_times else None,
                "reconnect_all_after_drop_s": reconnect_s,
                "stagger_s": args.stagger,
                "rss_per_device_kib": round(growth_kib / max(1, args.devices), 1),
                "per_worker": per_worker,
                "scan_retries": len(scan_failures),
            }
    finally:
        benchenv.stop_processes(proc for _, proc, _ in procs)
        js = nc.jetstream()
        for bucket in (env["WORKER_MEMBERS_BUCKET"], env["WORKER_LEASES_BUCKET"]):
            with contextlib.suppress(Exception):
                await js.delete_key_value(bucket)
        await nc.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()


def markdown(result: dict[str, Any]) -> str:
    rows = [
        ("devices / workers", f"{result['devices']} / {result['workers']}"),
        ("connected", str(result["connected"])),
        ("time to all connected (incl. QR + scan)", f"{result['time_to_all_connected_s']} s"),
        ("first QR, median after connect", f"{result['first_qr_median_s']} s"),
        ("all back after dropping every connection", f"{result['reconnect_all_after_drop_s']} s"),
        ("worker RSS per connected device", f"{result['rss_per_device_kib']} KiB"),
    ]
    rows += [
        (f"{w} RSS before → after", f"{v['rss_before_mib']} → {v['rss_after_mib']} MiB")
        for w, v in result["per_worker"].items()
    ]
    lines = ["| measure | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pg", default=benchenv.DEFAULT_POSTGRES, help="a PostgreSQL server")
    parser.add_argument("--nats", default=None, help="default: a private nats-server for the run")
    parser.add_argument(
        "--stagger", type=float, default=5.0, help="WORKER_RECONNECT_STAGGER_SECONDS"
    )
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--drop-all", action="store_true", help="also time a reconnect storm")
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
    print()
    print(markdown(result))
