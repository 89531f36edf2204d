"""Benchmark of a history import in the neonize host (issue 12), offline.

    uv run python bench/neonize_history_bench.py [--messages 100000] [--chats 100] [--runs 3]

A HistorySync blob of ``--messages`` text messages over ``--chats`` one-to-one
chats (all inside the 30-day window) is built once and serialized. Measured in
the same run:

* **raw ceiling**: neonize's own decode of the blob (``HistorySync.FromString``,
  the protobuf parse neonize runs on Go's bytes), and the same decode plus
  reading every message's id, chat, time and text (the least any import does);
* **mapping in process**: the decode plus :class:`HistoryMapper` (what the host
  does to every message), and that plus the JSON lines the host writes;
* **through the host**: the blob handed to a real host child (as Go would: the
  bytes decoded on another thread than the lane) holding two linked sessions;
  the time until the driver (this process) has delivered every message as
  ``WaHistory`` batches, and meanwhile one live message of the *other* device:
  its delivery time and how many history batches had arrived before it.

Uses a scratch database on ``--admin-url``'s server (the whatsmeow store the
host needs), dropped at the end; every setting is passed explicitly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import benchenv
from neonize_bench import TEST_HOST, Recorder, black_hole, store_sessions

from clarin_common.db import with_database
from clarin_common.events import WaHistory, WaMessage
from clarin_common.logging import configure_logging
from clarin_devices.worker.drivers import InboundMedia
from clarin_devices.worker.drivers.neonize_driver import NeonizeConfig, NeonizeDriver
from clarin_devices.worker.drivers.neonize_mapping import HistoryMapper

sys.path.insert(0, str(benchenv.ROOT / "services/devices/tests"))
from neonize_test_host import synthetic_history


def build_blob(messages: int, chats: int) -> bytes:
    from neonize.proto.Neonize_pb2 import HistorySync as HistorySyncEv
    from neonize.proto.waHistorySync import WAWebProtobufsHistorySync_pb2 as hs

    data = synthetic_history(hs, chats, messages // chats, prefix="B")
    return bytes(HistorySyncEv(Data=data).SerializeToString())


def best(runs: int, work: Any) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def in_process(blob: bytes, runs: int, batch: int) -> dict[str, float]:
    from neonize.proto.Neonize_pb2 import HistorySync as HistorySyncEv

    since = datetime.now(UTC) - timedelta(days=30)

    def decode() -> None:
        HistorySyncEv.FromString(blob)

    def decode_and_read() -> None:
        data = HistorySyncEv.FromString(blob).Data
        for conv in data.conversations:
            chat = conv.ID
            for item in conv.messages:
                web = item.message
                _ = (chat, web.key.ID, web.messageTimestamp, web.message.conversation)

    def decode_and_map() -> None:
        list(HistoryMapper(since=since).conversations(HistorySyncEv.FromString(blob).Data))

    def decode_map_encode() -> None:
        found = HistoryMapper(since=since).conversations(HistorySyncEv.FromString(blob).Data)
        messages = [m for _, ms in found for m in ms]
        for i in range(0, len(messages), batch):
            json.dumps({"messages": messages[i : i + batch]}, separators=(",", ":"))

    return {
        "decode": best(runs, decode),
        "decode_read": best(runs, decode_and_read),
        "decode_map": best(runs, decode_and_map),
        "decode_map_json": best(runs, decode_map_encode),
    }


async def through_host(database_url: str, blob: bytes, messages: int) -> dict[str, Any]:
    sock, port = black_hole()
    driver = NeonizeDriver(
        database_url,
        NeonizeConfig(
            proxy=f"http://127.0.0.1:{port}",
            settle_timeout=0.2,
            connect_timeout=3600,
            call_timeout=20.0,
            host_command=TEST_HOST,
            log_level="WARNING",
            history_quiet=0.5,
        ),
    )
    await driver.start()
    events = Recorder()
    batches: list[WaHistory] = []
    done = asyncio.Event()
    live_seen: dict[str, float] = {}
    received = 0
    first_batch_at: float | None = None

    async def on_history(device_id: str, history: WaHistory) -> None:
        nonlocal received, first_batch_at
        batches.append(history)
        received += len(history.messages)
        if first_batch_at is None:
            first_batch_at = time.monotonic()
        if received >= messages and "all" not in live_seen:
            live_seen["all"] = time.monotonic()
        if history.last:
            done.set()

    async def on_message(device_id: str, message: WaMessage, media: InboundMedia | None) -> None:
        live_seen[message.wa_message_id] = time.monotonic()
        live_seen[f"{message.wa_message_id}:batches"] = len(batches)

    events.on_history = on_history
    events.on_message = on_message
    importing, other = str(uuid.uuid4()), str(uuid.uuid4())
    jids = await store_sessions(database_url, 2)
    await driver.connect(importing, jids[0], events)
    await driver.connect(other, jids[1], events)
    path = Path(tempfile.mkdtemp(prefix="clarin-history-")) / "blob.bin"
    path.write_bytes(blob)
    session, other_session = driver.session(importing), driver.session(other)
    assert session is not None and other_session is not None
    live_event = {
        "Info": {
            "ID": "LIVE",
            "Timestamp": str(int(time.time())),
            "MessageSource": {
                "Chat": {"User": "5215512345678", "Server": "s.whatsapp.net"},
                "Sender": {"User": "5215512345678", "Server": "s.whatsapp.net"},
            },
        },
        "Message": {"conversation": "¿hola?"},
    }
    try:
        started = time.monotonic()
        await driver.pool.request(
            session.child, "debug_history_file", sid=session.sid, path=str(path), timeout=60
        )
        await asyncio.sleep(0.05)  # the import is under way
        live_at = time.monotonic()
        await driver.pool.request(
            other_session.child,
            "debug_inject",
            sid=other_session.sid,
            event="MessageEv",
            fields=live_event,
            timeout=60,
        )
        await asyncio.wait_for(done.wait(), timeout=600)
        finished = live_seen.get("all", time.monotonic())
    finally:
        await driver.stop()
        sock.close()
        path.unlink()
    return {
        "seconds_to_every_message": round(finished - started, 2),
        "messages_per_second": round(received / (finished - started)),
        "first_batch_after": round((first_batch_at or finished) - started, 2),
        "batches": len(batches),
        "messages": received,
        "live_message_after": round(live_seen.get("LIVE", float("nan")) - live_at, 3),
        "batches_before_live": live_seen.get("LIVE:batches"),
    }


async def main() -> None:
    configure_logging("WARNING", json=False, service="neonize-history-bench")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin-url", default=benchenv.DEFAULT_POSTGRES)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="history_batch")
    args = parser.parse_args()
    benchenv.isolate()  # the driver's children inherit this environment
    started = time.perf_counter()
    blob = build_blob(args.messages, args.chats)
    print(
        f"blob: {args.messages} messages in {args.chats} chats, {len(blob) / 1e6:.1f} MB "
        f"(built in {time.perf_counter() - started:.1f} s)"
    )
    local = in_process(blob, args.runs, args.batch)
    n = args.messages
    for name, label in (
        ("decode", "raw ceiling: decode (HistorySync.FromString)"),
        ("decode_read", "raw ceiling: decode + read every message"),
        ("decode_map", "decode + HistoryMapper"),
        ("decode_map_json", "decode + HistoryMapper + JSON lines"),
    ):
        seconds = local[name]
        print(f"{label}: {seconds:.3f} s ({n / seconds:,.0f} msg/s)")
    name = f"clarin_bench_history_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    database_url = with_database(args.admin_url, name)
    try:
        for run in range(1, args.runs + 1):
            result = await through_host(database_url, blob, n)
            print(f"through the host, run {run}: {result}")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
