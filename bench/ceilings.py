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

    uv run python bench/ceilings.py --json       # --rows 20000 --nats-msgs 100000 --js-msgs 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import benchenv
import nats
from nats.js.api import StorageType, StreamConfig

from clarin_common.db import migrate_sync, with_database
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


async def postgres_ceilings(admin_url: str, n: int, batch: int) -> dict[str, float]:
    """Rows/s of the consumer's multi-row INSERT (a transaction per batch) and of
    COPY, into ``messaging.messages`` of a fresh database (dropped afterwards)."""
    from clarin_messaging.messages.repository import NewMessage, insert_many

    name = f"clarin_bench_ceil_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        db_url = with_database(admin_url, name)
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
            started = time.perf_counter()
            for start in range(0, len(messages), batch):
                async with conn.transaction():
                    await insert_many(conn, messages[start : start + batch])
            insert_s = time.perf_counter() - started
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
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return {"rows": n, "insert_unnest_per_s": n / insert_s, "copy_per_s": n / copy_s}


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
    report["postgres"] = {k: round(v) for k, v in pg.items()}
    report["postgres"]["batch"] = args.batch
    with benchenv.servers(args.nats_url, "") as servers:
        raw = await nats_ceilings(servers.nats_url, args.nats_msgs, args.js_msgs, args.payload)
    report["nats"] = {k: round(v) for k, v in raw.items()}
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
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args()
    benchenv.isolate()
    report = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(report))
        return
    pg, raw = report["postgres"], report["nats"]
    print(
        f"raw ceilings ({report['cpus']} CPUs, load {report['loadavg_before']} before)\n"
        f"  PostgreSQL, {pg['rows']:,} messaging.messages rows: multi-row INSERT "
        f"{pg['insert_unnest_per_s']:,} rows/s (a transaction per {pg['batch']}), "
        f"COPY {pg['copy_per_s']:,} rows/s\n"
        f"  NATS, {raw['payload_bytes']}-byte messages: core publish "
        f"{raw['core_publish_per_s']:,} msgs/s; JetStream publish acked "
        f"{raw['js_publish_sync_per_s']:,} msgs/s one by one, "
        f"{raw['js_publish_async_per_s']:,} msgs/s pipelined"
    )


if __name__ == "__main__":
    main()
