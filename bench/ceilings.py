"""The raw ceilings of this host, measured at the start of `make bench` (same run).

Every figure of `make bench` is read beside one of these, measured minutes apart
on the same machine, because this host's absolute speed varies by 2 times from day
to day (and more while other work shares its two cores):

* **PostgreSQL**: ``--rows`` rows shaped like ``messaging.messages`` rows (the
  same text bodies, 100 chats, one device) into that very table of a throw-away
  database migrated by the messaging service's own migrations: with the
  messaging consumer's own multi-row ``INSERT … SELECT FROM unnest`` (one
  transaction per batch of ``--batch`` rows), and with ``COPY`` (one
  transaction); rows/s.
* **NATS** (a private nats-server, started for the run unless ``--nats-url``
  names one): core publish of ``--payload``-byte messages with one flush at the
  end; JetStream publish into a file-backed stream with every ack awaited one by
  one (sync), and with acks pipelined (``publish_async``, up to 4,000 in flight);
  msgs/s.
* **The pipeline's NATS path alone** (``--path-msgs``): what the inbound pipeline
  does on NATS and nothing else, in three processes like the worker, messaging
  and the gateway: publish pipelined with a ``Nats-Msg-Id`` into a file-backed
  stream; a durable pull consumer fetching batches of ``--path-batch`` that
  republishes each message (pipelined) into a second stream and then acks each
  one (explicit acks, as messaging does); a core-NATS subscriber on the second
  stream's subjects (as the gateway's hub). msgs/s from the first publish to the
  last message at the subscriber.
* **CPU per message**: the whole machine's busy CPU time (``/proc/stat``) while
  the multi-row INSERT and while the NATS path ran, per row and per message.
  Their sum is what the pipeline's plumbing alone costs per message; the number of
  CPUs divided by it is the **bare bound**: what any pipeline that moves a
  message over that NATS path and inserts its row could reach on this host with
  no work of its own at all (an upper bound: the machine's other work counts too).

    uv run python bench/ceilings.py --json       # --rows 20000 --nats-msgs 100000 --js-msgs 5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import benchenv
import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from clarin_common.db import migrate_sync
from clarin_common.ids import chat_id_for

MESSAGE_COLUMNS = [
    "id", "account_id", "chat_id", "device_id", "wa_message_id", "direction", "type",
    "body", "status", "sender_jid", "sender_name", "sent_at", "client_id",
]  # fmt: skip


def message_rows(n: int, chats: int = 100) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(chats, messages) rows as the inbound consumer stores them: one account and
    device, ``chats`` one-to-one chats, text messages received over the last hour."""
    account_id, device_id = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    phones = [f"521550{i:07d}" for i in range(chats)]
    chat_rows = [
        (
            uuid.UUID(chat_id_for(str(device_id), f"{p}@s.whatsapp.net")),
            account_id,
            device_id,
            f"{p}@s.whatsapp.net",
            p,
        )
        for p in phones
    ]
    rows = []
    for i in range(n):
        chat = chat_rows[i % chats]
        rows.append(
            (
                uuid.uuid4(),
                account_id,
                chat[0],
                device_id,
                f"CEIL{i:010d}",
                "in",
                "text",
                f"Hola, quiero información del producto {i}",
                "received",
                chat[3],
                f"Contact {chat[4][-4:]}",
                now - timedelta(seconds=n - i),
                None,
            )
        )
    return chat_rows, rows


def machine_busy_s() -> float:
    """CPU-seconds every CPU of the machine has spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


async def postgres_ceilings(admin_url: str, n: int, batch: int) -> dict[str, float]:
    """Rows/s of the consumer's multi-row INSERT (a transaction per batch) and of
    COPY, into ``messaging.messages`` of a fresh database (dropped afterwards)."""
    from clarin_messaging.messages.repository import NewMessage, insert_many

    async with benchenv.fresh_database(admin_url, prefix="clarin_bench_ceil") as db_url:
        migrations = benchenv.ROOT / "services" / "messaging" / "migrations"
        await asyncio.to_thread(migrate_sync, db_url, "messaging", migrations)
        chat_rows, rows = message_rows(n)
        conn = await asyncpg.connect(db_url, server_settings={"search_path": "messaging"})
        try:
            await conn.copy_records_to_table(
                "chats",
                records=chat_rows,
                columns=["id", "account_id", "device_id", "jid", "phone"],
            )
            messages = [
                NewMessage(
                    id=str(r[0]),
                    account_id=str(r[1]),
                    chat_id=str(r[2]),
                    device_id=str(r[3]),
                    wa_message_id=r[4],
                    direction=r[5],
                    type=r[6],
                    body=r[7],
                    status=r[8],
                    sender_jid=r[9],
                    sender_name=r[10],
                    sent_at=r[11],
                    client_id=r[12],
                )
                for r in rows
            ]
            busy = machine_busy_s()
            started = time.perf_counter()
            for start in range(0, len(messages), batch):
                async with conn.transaction():
                    await insert_many(conn, messages[start : start + batch])
            insert_s = time.perf_counter() - started
            insert_cpu_s = machine_busy_s() - busy
            stored = await conn.fetchval("SELECT count(*) FROM messages")
            if stored != n:
                raise RuntimeError(f"multi-row INSERT stored {stored} of {n} rows")

            await conn.execute("TRUNCATE messages CASCADE")
            started = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table("messages", records=rows, columns=MESSAGE_COLUMNS)
            copy_s = time.perf_counter() - started
        finally:
            await conn.close()
    return {
        "rows": n,
        "insert_unnest_per_s": n / insert_s,
        "insert_cpu_us_per_row": insert_cpu_s / n * 1e6,
        "copy_per_s": n / copy_s,
    }


async def nats_ceilings(nats_url: str, core_msgs: int, js_msgs: int, size: int) -> dict[str, float]:
    """Msgs/s of core publish (flushed at the end) and of JetStream publish, acks
    awaited one by one and pipelined, into a file-backed stream of our own."""
    payload = os.urandom(size // 2).hex().encode()[:size]
    nc = await nats.connect(nats_url, pending_size=256 * 1024 * 1024)
    stream = f"CEILING_{uuid.uuid4().hex[:8].upper()}"
    subject = f"ceiling.{stream.lower()}"
    try:
        started = time.perf_counter()
        for _ in range(core_msgs):
            await nc.publish(subject, payload)
        await nc.flush(timeout=60)
        core_s = time.perf_counter() - started

        js = nc.jetstream(publish_async_max_pending=4000)
        await js.add_stream(
            StreamConfig(name=stream, subjects=[f"{subject}.>"], storage=StorageType.FILE)
        )
        try:
            started = time.perf_counter()
            for i in range(js_msgs):
                await js.publish(f"{subject}.sync", payload, headers={"Nats-Msg-Id": f"s{i}"})
            sync_s = time.perf_counter() - started

            started = time.perf_counter()
            futures = [
                await js.publish_async(
                    f"{subject}.async", payload, headers={"Nats-Msg-Id": f"a{i}"}
                )
                for i in range(js_msgs)
            ]
            await asyncio.wait_for(js.publish_async_completed(), 60)
            async_s = time.perf_counter() - started
            for future in futures:
                future.result()  # a refused publish raises here
            stored = (await js.stream_info(stream)).state.messages
            if stored != 2 * js_msgs:
                raise RuntimeError(f"JetStream stored {stored} of {2 * js_msgs} messages")
        finally:
            await js.delete_stream(stream)
    finally:
        await nc.close()
    return {
        "payload_bytes": size,
        "core_msgs": core_msgs,
        "core_publish_per_s": core_msgs / core_s,
        "js_msgs": js_msgs,
        "js_publish_sync_per_s": js_msgs / sync_s,
        "js_publish_async_per_s": js_msgs / async_s,
    }


def _path_publisher(url: str, subject: str, n: int, payload: bytes, ready: Any, go: Any) -> None:
    async def publish() -> None:
        nc = await nats.connect(url, pending_size=256 * 1024 * 1024)
        js = nc.jetstream(publish_async_max_pending=4000)
        ready.put(True)
        await asyncio.to_thread(go.wait, 60)
        for i in range(n):
            await js.publish_async(
                f"{subject}.d{i % 100}.message", payload, headers={"Nats-Msg-Id": f"m{i}"}
            )
        await asyncio.wait_for(js.publish_async_completed(), 120)
        await nc.close()

    asyncio.run(publish())


def _path_relay(url: str, stream: str, durable: str, out: str, n: int, batch: int) -> None:
    async def relay() -> None:
        nc = await nats.connect(url, pending_size=256 * 1024 * 1024)
        js = nc.jetstream(publish_async_max_pending=4000)
        sub = await js.pull_subscribe_bind(durable, stream)
        done = 0
        while done < n:
            try:
                msgs = await sub.fetch(batch, timeout=1)
            except NatsTimeout:
                continue
            for msg in msgs:
                msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
                await js.publish_async(
                    f"{out}.account.new_message", msg.data, headers={"Nats-Msg-Id": f"r{msg_id}"}
                )
            await asyncio.wait_for(js.publish_async_completed(), 60)
            for msg in msgs:
                await msg.ack()
            done += len(msgs)
        await nc.flush()
        await nc.close()

    asyncio.run(relay())


def _path_sink(url: str, subject: str, n: int, ready: Any, finished: Any) -> None:
    async def sink() -> None:
        nc = await nats.connect(url, pending_size=256 * 1024 * 1024)
        got = 0
        done = asyncio.Event()

        async def on_message(_msg: Any) -> None:
            nonlocal got
            got += 1
            if got >= n:
                done.set()

        await nc.subscribe(f"{subject}.>", cb=on_message)
        await nc.flush()
        ready.put(True)
        await asyncio.wait_for(done.wait(), 300)
        finished.put(time.perf_counter())
        await nc.close()

    asyncio.run(sink())


async def nats_path_ceiling(nats_url: str, n: int, size: int, batch: int) -> dict[str, float]:
    """Msgs/s and machine CPU per message of the pipeline's NATS path alone."""
    payload = os.urandom(size // 2).hex().encode()[:size]
    tag = uuid.uuid4().hex[:8]
    inbound, outbound = f"PATHIN_{tag.upper()}", f"PATHOUT_{tag.upper()}"
    in_subject, out_subject = f"pathin.{tag}", f"pathout.{tag}"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    window = 120.0  # the streams' duplicate window (clarin_common.nats)
    for name, subject in ((inbound, in_subject), (outbound, out_subject)):
        await js.add_stream(
            StreamConfig(
                name=name,
                subjects=[f"{subject}.>"],
                storage=StorageType.FILE,
                duplicate_window=window,
            )
        )
    await js.add_consumer(
        inbound,
        ConsumerConfig(durable_name="relay", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=20_000),
    )
    spawn = multiprocessing.get_context("spawn")
    ready, finished, go = spawn.Queue(), spawn.Queue(), spawn.Event()
    procs = [
        spawn.Process(target=_path_sink, args=(nats_url, out_subject, n, ready, finished)),
        spawn.Process(target=_path_relay, args=(nats_url, inbound, "relay", out_subject, n, batch)),
        spawn.Process(target=_path_publisher, args=(nats_url, in_subject, n, payload, ready, go)),
    ]
    try:
        for proc in procs:
            proc.start()
        for _ in range(2):  # the subscriber and the publisher connected
            await asyncio.to_thread(ready.get, True, 60)
        await asyncio.sleep(1.0)  # the relay is fetching; every start-up is over
        busy = machine_busy_s()
        started = time.perf_counter()
        go.set()
        ended: float = await asyncio.to_thread(finished.get, True, 300)
        cpu_s = machine_busy_s() - busy
        for proc in procs:
            await asyncio.to_thread(proc.join, 30)
        failed = [p.exitcode for p in procs if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"NATS path process exited with {failed}")
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        for name in (inbound, outbound):
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
        await nc.close()
    return {
        "msgs": n,
        "batch": batch,
        "per_s": n / (ended - started),
        "cpu_us_per_msg": cpu_s / n * 1e6,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    # `make bench` ends a benchmark past its timeout with SIGTERM: unwind, so that
    # the throw-away database is dropped and the private servers stop
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    report: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "loadavg_before": round(os.getloadavg()[0], 2),
    }
    pg = await postgres_ceilings(args.database_url, args.rows, args.batch)
    report["postgres"] = {
        k: round(v, 1) if k.endswith("_us_per_row") else round(v) for k, v in pg.items()
    }
    report["postgres"]["batch"] = args.batch
    with benchenv.servers(args.nats_url, "") as servers:
        raw = await nats_ceilings(servers.nats_url, args.nats_msgs, args.js_msgs, args.payload)
        path = await nats_path_ceiling(
            servers.nats_url, args.path_msgs, args.payload, args.path_batch
        )
    report["nats"] = {k: round(v) for k, v in raw.items()}
    report["nats_path"] = {k: round(v, 1) for k, v in path.items()}
    plumbing_us = report["postgres"]["insert_cpu_us_per_row"] + path["cpu_us_per_msg"]
    report["bare_bound"] = {
        "cpu_us_per_msg": round(plumbing_us, 1),
        "per_s": round(report["cpus"] * 1e6 / plumbing_us) if plumbing_us > 0 else None,
    }
    report["loadavg_after"] = round(os.getloadavg()[0], 2)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default=benchenv.DEFAULT_POSTGRES,
        help="a maintenance database; the bench creates (and drops) its own",
    )
    parser.add_argument("--nats-url", default=None, help="default: a private nats-server")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="rows per INSERT transaction")
    parser.add_argument("--nats-msgs", type=int, default=100_000, help="core publishes")
    parser.add_argument("--js-msgs", type=int, default=5_000, help="JetStream publishes, each way")
    parser.add_argument("--payload", type=int, default=300, help="bytes per NATS message")
    parser.add_argument("--path-msgs", type=int, default=20_000, help="through the NATS path")
    parser.add_argument(
        "--path-batch", type=int, default=1000, help="the relay's fetch (messaging's default)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args()
    benchenv.isolate()
    report = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(report))
        return
    pg, raw, path = report["postgres"], report["nats"], report["nats_path"]
    print(
        f"raw ceilings ({report['cpus']} CPUs, load {report['loadavg_before']} before)\n"
        f"  PostgreSQL, {pg['rows']:,} messaging.messages rows: multi-row INSERT "
        f"{pg['insert_unnest_per_s']:,} rows/s (a transaction per {pg['batch']}), "
        f"COPY {pg['copy_per_s']:,} rows/s\n"
        f"  NATS, {raw['payload_bytes']}-byte messages: core publish "
        f"{raw['core_publish_per_s']:,} msgs/s; JetStream publish acked "
        f"{raw['js_publish_sync_per_s']:,} msgs/s one by one, "
        f"{raw['js_publish_async_per_s']:,} msgs/s pipelined\n"
        f"  the pipeline's NATS path alone: {path['per_s']:,.0f} msgs/s, "
        f"{path['cpu_us_per_msg']:.1f} µs CPU per message; the INSERT "
        f"{pg['insert_cpu_us_per_row']:.1f} µs per row\n"
        f"  bare bound (path + INSERT, no work between, {report['cpus']} CPUs): "
        f"{report['bare_bound']['per_s']:,} msgs/s"
    )


if __name__ == "__main__":
    main()
