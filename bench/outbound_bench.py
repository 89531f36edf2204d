"""The durable send queue: queued sends over many devices drain at the configured pace.

Starts the devices API in-process (it migrates a throw-away database) and
``--workers`` device-worker processes with the simulator driver, links
``--devices`` devices (stored sessions: no QR) and waits until all are
connected. Then it queues ``--sends`` sends on ``WA_OUTBOX`` as messaging does
(spread evenly over the devices) and waits until the simulated phones
(``simphone.{device}``) got every one. It reports:

* the drain time beside the time the pace allows (sends per device ÷ rate);
* the pace each device achieved (sends - 1 over first → last), median and range;
* sends that reached a phone twice (must be 0) and in the wrong order (must be 0);
* the workers' CPU per send (their CPU during the drain minus what they use idle
  for as long, from /proc), beside a raw JetStream ceiling measured in the same
  run by this process: CPU per message to publish to a work-queue stream and to
  take it back one at a time (fetch 1 + ack), which is the least the queue does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import benchenv
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from clarin_common import nats as natsmod
from clarin_common.db import with_database
from clarin_common.events import SendTextCommand, outbound_envelope, wa_outbox_subject
from clarin_common.settings import DEV_JWT_PUBLIC_KEY
from clarin_devkit.testing import auth_headers, free_port, make_token, running_app

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = benchenv.isolate()
    with benchenv.servers(args.nats) as servers:
        return await run(args, servers.nats_url, workdir)


async def raw_ceiling(nc: Any, count: int, payload: bytes) -> dict[str, float]:
    """CPU of this process per message: publish (acked) to a work-queue stream,
    then take each back with fetch(1) + ack."""
    js = nc.jetstream()
    name = f"BENCH_RAW_{uuid.uuid4().hex[:6]}"
    await js.add_stream(
        StreamConfig(
            name=name, subjects=[f"{name.lower()}.>"], retention=RetentionPolicy.WORK_QUEUE
        )
    )
    try:
        cpu0, t0 = time.process_time(), time.monotonic()
        for start in range(0, count, 500):
            await asyncio.gather(
                *(
                    js.publish(f"{name.lower()}.d.x", payload, headers={"Nats-Msg-Id": f"{i}"})
                    for i in range(start, min(count, start + 500))
                )
            )
        publish_cpu, publish_s = time.process_time() - cpu0, time.monotonic() - t0
        await js.add_consumer(
            name,
            ConsumerConfig(durable_name="raw", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1),
        )
        sub = await js.pull_subscribe_bind("raw", name)
        cpu0, t0 = time.process_time(), time.monotonic()
        for _ in range(count):
            [msg] = await sub.fetch(1, timeout=5)
            await msg.ack()
        consume_cpu, consume_s = time.process_time() - cpu0, time.monotonic() - t0
        await sub.unsubscribe()
    finally:
        await js.delete_stream(name)
    return {
        "publish_cpu_ms_per_msg": round(publish_cpu / count * 1000, 3),
        "publish_msgs_per_s": round(count / publish_s),
        "take_cpu_ms_per_msg": round(consume_cpu / count * 1000, 3),
        "take_msgs_per_s_one_consumer": round(count / consume_s),
    }


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
        "WORKER_RECONNECT_STAGGER_SECONDS": "2",
        "WORKER_SEND_RATE_PER_SECOND": str(args.rate),
        "WORKER_SEND_JITTER": str(args.jitter),
        "WORKER_SIM_RECEIPT_DELAY": "1",
        "WORKER_SIM_READ_DELAY": "1",
        "WORKER_DB_POOL_MAX": "10",
    }
    procs: list[tuple[str, subprocess.Popen[bytes], int]] = []
    nc = await natsmod.connect(nats_url, name="outbound-bench")
    try:
        from clarin_devices.main import create_app
        from clarin_devices.settings import DevicesSettings

        settings = DevicesSettings(
            _env_file=None,
            env="dev",
            database_url=database_url,
            nats_url=nats_url,
            jwt_public_key=DEV_JWT_PUBLIC_KEY,
        )
        account_id = str(uuid.uuid4())
        headers = auth_headers(make_token(account_id=account_id))
        async with running_app(create_app(settings)) as client:
            device_ids: list[str] = []
            for i in range(args.devices):
                resp = await client.post("/api/devices", json={"name": f"d{i}"}, headers=headers)
                resp.raise_for_status()
                device_ids.append(resp.json()["id"])
            db = await asyncpg.connect(database_url)
            for i, device_id in enumerate(device_ids):  # linked earlier: a stored session
                phone = f"52155{i:08d}"
                await db.execute(
                    "UPDATE devices.devices SET jid = $2, phone = $3 WHERE id = $1",
                    uuid.UUID(device_id),
                    f"{phone}@s.whatsapp.net",
                    phone,
                )
            await db.close()
            for i in range(args.workers):
                port = free_port()
                worker_id = f"bench-{run_id}-{i + 1}"
                proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the clock
                    [sys.executable, "-m", "clarin_devices.worker.main"],
                    env={**env, "WORKER_ID": worker_id, "WORKER_PORT": str(port)},
                    cwd=workdir,
                )
                procs.append((worker_id, proc, port))
            for _, proc, port in procs:
                await benchenv.wait_ready(port, proc)

            connected: set[str] = set()
            all_connected = asyncio.Event()

            async def on_status(msg: Msg) -> None:
                if json.loads(msg.data)["data"]["status"] == "connected":
                    connected.add(msg.subject.split(".")[3])
                    if len(connected) >= len(device_ids):
                        all_connected.set()

            status_sub = await nc.subscribe("wa.evt.*.*.status", cb=on_status)
            await nc.flush()
            for device_id in device_ids:
                (
                    await client.post(f"/api/devices/{device_id}/connect", headers=headers)
                ).raise_for_status()
            await asyncio.wait_for(all_connected.wait(), args.timeout)
            await status_sub.unsubscribe()

            seen: dict[str, list[tuple[float, str, str]]] = {d: [] for d in device_ids}
            received = 0
            done = asyncio.Event()

            async def on_phone(msg: Msg) -> None:
                nonlocal received
                body = json.loads(msg.data)
                seen[msg.subject.split(".", 1)[1]].append(
                    (time.monotonic(), body["body"], body["wa_message_id"])
                )
                received += 1
                if received >= args.sends:
                    done.set()

            phone_sub = await nc.subscribe("simphone.*", cb=on_phone, pending_msgs_limit=-1)
            await nc.flush()
            await asyncio.sleep(3.0)  # reconnect spread over: idle from here

            pids = [p.pid for _, p, _ in procs]
            idle0 = sum(map(cpu_seconds, pids))
            idle_t0 = time.monotonic()
            await asyncio.sleep(args.idle)
            idle_rate = (sum(map(cpu_seconds, pids)) - idle0) / (time.monotonic() - idle_t0)

            js = nc.jetstream()
            per_device = args.sends // len(device_ids)
            cpu0 = sum(map(cpu_seconds, pids))
            started = time.monotonic()
            envelopes = []
            for n in range(per_device):
                for device_id in device_ids:
                    command = SendTextCommand(
                        message_id=str(uuid.uuid4()), to="5215599990000", body=f"{device_id}:{n}"
                    )
                    envelopes.append((device_id, outbound_envelope(account_id, device_id, command)))
            for start in range(0, len(envelopes), 500):
                await asyncio.gather(
                    *(
                        js.publish(
                            wa_outbox_subject(d, "interactive"),
                            natsmod.encode(env_),
                            headers={"Nats-Msg-Id": env_.id},
                        )
                        for d, env_ in envelopes[start : start + 500]
                    )
                )
            queued_s = time.monotonic() - started
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), args.timeout + per_device / args.rate)
            drain_s = time.monotonic() - started
            busy_cpu = sum(map(cpu_seconds, pids)) - cpu0 - idle_rate * drain_s
            await phone_sub.unsubscribe()

            duplicates = 0
            out_of_order = 0
            rates = []
            for items in seen.values():
                numbers = [int(body.rsplit(":", 1)[1]) for _, body, _ in items]
                duplicates += len(numbers) - len(set(numbers))
                out_of_order += sum(1 for a, b in itertools.pairwise(numbers) if b < a)
                if len(items) > 1:
                    rates.append((len(items) - 1) / (items[-1][0] - items[0][0]))
            sample = json.dumps(
                outbound_envelope(
                    account_id,
                    device_ids[0],
                    SendTextCommand(
                        message_id=str(uuid.uuid4()), to="5215599990000", body=f"{device_ids[0]}:0"
                    ),
                ).model_dump(mode="json")
            ).encode()
            raw = await raw_ceiling(nc, min(args.sends, 10_000), sample)
            delivered = sum(len(v) for v in seen.values())
            return {
                "devices": len(device_ids),
                "workers": args.workers,
                "sends": per_device * len(device_ids),
                "delivered": delivered,
                "duplicates": duplicates,
                "out_of_order": out_of_order,
                "rate_per_device_configured": args.rate,
                "jitter": args.jitter,
                "queued_in_s": round(queued_s, 2),
                "drain_s": round(drain_s, 1),
                "drain_s_the_pace_allows": round((per_device - 1) / args.rate, 1),
                "pace_per_device_median": round(statistics.median(rates), 3) if rates else None,
                "pace_per_device_min": round(min(rates), 3) if rates else None,
                "pace_per_device_max": round(max(rates), 3) if rates else None,
                "worker_cpu_ms_per_send": round(busy_cpu / max(delivered, 1) * 1000, 3),
                "worker_idle_cpu_pct": round(idle_rate * 100, 1),
                "raw": raw,
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


def markdown(r: dict[str, Any]) -> str:
    raw = r["raw"]
    rows = [
        ("sends / devices / workers", f"{r['sends']:,} / {r['devices']} / {r['workers']}"),
        (
            "delivered, duplicates, out of order",
            f"{r['delivered']:,}, {r['duplicates']}, {r['out_of_order']}",
        ),
        (
            "configured pace per device",
            f"{r['rate_per_device_configured']}/s, jitter {int(r['jitter'] * 100)} %",
        ),
        (
            "pace achieved per device: median (min to max)",
            f"{r['pace_per_device_median']}/s ({r['pace_per_device_min']} to "
            f"{r['pace_per_device_max']}/s)",
        ),
        (
            "drain time (what the pace allows)",
            f"{r['drain_s']} s ({r['drain_s_the_pace_allows']} s)",
        ),
        ("all queued in", f"{r['queued_in_s']} s"),
        (
            f"worker CPU per send (idle {r['worker_idle_cpu_pct']} % of a core subtracted)",
            f"{r['worker_cpu_ms_per_send']} ms",
        ),
        (
            "raw JetStream, same run: publish (acked)",
            f"{raw['publish_cpu_ms_per_msg']} ms CPU/msg, {raw['publish_msgs_per_s']:,}/s",
        ),
        (
            "raw JetStream, same run: fetch(1) + ack",
            f"{raw['take_cpu_ms_per_msg']} ms CPU/msg, "
            f"{raw['take_msgs_per_s_one_consumer']:,}/s on one consumer",
        ),
    ]
    return "\n".join(["| measure | value |", "| --- | --- |", *(f"| {a} | {b} |" for a, b in rows)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--sends", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=1.0, help="WORKER_SEND_RATE_PER_SECOND")
    parser.add_argument("--jitter", type=float, default=0.3, help="WORKER_SEND_JITTER")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU baseline")
    parser.add_argument("--pg", default=benchenv.DEFAULT_POSTGRES, help="a PostgreSQL server")
    parser.add_argument("--nats", default=None, help="default: a private nats-server for the run")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    print(json.dumps(result, indent=2) if arguments.json else markdown(result))
