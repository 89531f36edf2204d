"""History import benchmark: one device hands over 100,000 messages after linking.

Starts the messaging service as a real process (fresh database, private NATS
unless ``--nats-url``), then publishes the history of one device to
``wa.evt.{account}.{device}.history`` as the device worker does: parts of at most
``--part`` messages (the worker keeps a part under 512 KiB) sharing one
``sync_id``, the last one marked ``last``. It measures:

* **import time**: first history part published → the ``history_synced`` app event
  (the rows are then counted in the database: they must all be there, once);
* **live messages of other devices** during the import: ``--live-rate`` inbound
  messages a second spread over ``--live-devices`` other devices, publish →
  ``app.{account}.new_message`` event latency (p50/p90/p99/max), beside the same
  measured for a few seconds before the import (idle);
* beside it, in the same run and on the same table, the **raw ceiling**: the same
  rows re-inserted with a plain batched multi-row ``INSERT … FROM unnest`` (the
  consumer's own statement), one transaction per ``--part`` x ``MESSAGING_HISTORY_BATCH_PARTS``
  rows, with nothing else running.

    uv run python bench/history_bench.py --messages 100000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import benchenv
import nats
from messaging_bench import fresh_database, pct, purge, services
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from clarin_common.events import (
    WaHistory,
    WaHistoryChat,
    WaMessage,
    wa_envelope,
    wa_event_subject,
)
from clarin_common.nats import encode

HISTORY_BATCH_PARTS = 8  # MESSAGING_HISTORY_BATCH_PARTS: the service runs with its default


def history_parts(
    account_id: str, device_id: str, messages: int, chats: int, part: int
) -> list[tuple[str, bytes, str]]:
    """The history of one device, split as the worker splits it."""
    start = datetime.now(UTC) - timedelta(days=20)
    per_chat = max(1, messages // chats)
    items: list[WaMessage] = []
    for c in range(chats):
        jid = f"5215{c:08d}@s.whatsapp.net"
        for i in range(per_chat):
            if len(items) >= messages:
                break
            items.append(
                WaMessage(
                    wa_message_id=f"HB{c:05d}{i:06d}",
                    chat_jid=jid,
                    sender_jid=jid,
                    push_name=f"Contacto {c}",
                    direction="in" if i % 3 else "out",
                    body=f"Mensaje {i} de la conversación {c}: ¿me confirmas el pedido?",
                    sent_at=start + timedelta(seconds=c * per_chat + i),
                )
            )
    sync_id = uuid.uuid4().hex[:12]
    subject = wa_event_subject(account_id, device_id, "history")
    out = []
    for n, first in enumerate(range(0, len(items), part)):
        chunk = items[first : first + part]
        history = WaHistory(
            sync_id=sync_id,
            batch=n,
            last=first + part >= len(items),
            chats=[
                WaHistoryChat(chat_jid=f"5215{c:08d}@s.whatsapp.net", name=f"Contacto {c}")
                for c in range(chats)
            ]
            if n == 0
            else [],
            messages=chunk,
        )
        env = wa_envelope(account_id, device_id, "history", history)
        out.append((subject, encode(env), env.id))
    return out


class Live:
    """Inbound live messages of other devices, timed to their new_message event."""

    def __init__(self, accounts: dict[str, str]) -> None:
        self.accounts = accounts  # device → account
        self.sent: dict[str, float] = {}
        self.latency: dict[str, float] = {}
        self.synced_at: float | None = None
        self.synced: dict[str, Any] | None = None
        self.importing_at: float | None = None
        self.new_messages = 0
        self.done = asyncio.Event()

    async def on_app(self, msg: Msg) -> None:
        now = time.perf_counter()
        kind = msg.subject.rsplit(".", 1)[-1]
        if kind == "new_message":
            self.new_messages += 1
            data = json.loads(msg.data)["data"]["message"]
            wa_id = data["wa_message_id"]
            sent = self.sent.get(wa_id)
            if sent is not None and wa_id not in self.latency:
                self.latency[wa_id] = (now - sent) * 1000
        elif kind == "history_synced":
            self.synced_at = now
            self.synced = json.loads(msg.data)["data"]
            self.done.set()
        elif kind == "history_importing":
            self.importing_at = now

    async def send(self, nc: NatsClient, rate: float, until: asyncio.Event, tag: str) -> list[str]:
        """Publish ``rate`` messages a second until ``until`` is set; their wa ids."""
        devices = list(self.accounts)
        ids: list[str] = []
        n = 0
        started = time.perf_counter()
        while not until.is_set():
            device = devices[n % len(devices)]
            account = self.accounts[device]
            wa_id = f"LIVE-{tag}-{n}"
            phone = f"34{random.randint(600_000_000, 699_999_999)}"
            message = WaMessage(
                wa_message_id=wa_id,
                chat_jid=f"{phone}@s.whatsapp.net",
                sender_jid=f"{phone}@s.whatsapp.net",
                push_name="Live",
                direction="in",
                body="hola, ¿sigue disponible?",
                sent_at=datetime.now(UTC),
            )
            env = wa_envelope(account, device, "message", message)
            self.sent[wa_id] = time.perf_counter()
            await nc.publish(
                wa_event_subject(account, device, "message"),
                encode(env),
                headers={"Nats-Msg-Id": env.id},
            )
            await nc.flush()
            ids.append(wa_id)
            n += 1
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(until.wait(), delay)
        return ids

    def stats(self, ids: list[str]) -> dict[str, Any]:
        values = [self.latency[i] for i in ids if i in self.latency]
        return {
            "sent": len(ids),
            "delivered": len(values),
            "p50": round(pct(values, 0.5), 1),
            "p90": round(pct(values, 0.9), 1),
            "p99": round(pct(values, 0.99), 1),
            "max": round(max(values), 1) if values else None,
        }


async def raw_ceiling(database_url: str, device_id: str, rows_per_txn: int) -> dict[str, float]:
    """The imported rows again, into the same table, with the consumer's own
    multi-row INSERT, one transaction per batch, alone on the database."""
    from clarin_messaging.messages.repository import NewMessage, insert_many

    conn = await asyncpg.connect(database_url, server_settings={"search_path": "messaging"})
    try:
        rows = await conn.fetch(
            "SELECT id, account_id, chat_id, device_id, wa_message_id, direction, type, body,"
            " status, sender_jid, sender_name, sent_at, client_id FROM messages"
            " WHERE device_id = $1 ORDER BY sent_at",
            uuid.UUID(device_id),
        )
        messages = [
            NewMessage(*(str(v) if i < 4 else v for i, v in enumerate(r)))  # type: ignore[arg-type]
            for r in rows
        ]
        await conn.execute("DELETE FROM messages WHERE device_id = $1", uuid.UUID(device_id))
        started = time.perf_counter()
        for start in range(0, len(messages), rows_per_txn):
            async with conn.transaction():
                await insert_many(conn, messages[start : start + rows_per_txn])
        seconds = time.perf_counter() - started
        return {"rows": len(messages), "seconds": seconds, "rows_per_s": len(messages) / seconds}
    finally:
        await conn.close()


async def run(args: argparse.Namespace, db_url: str) -> dict[str, Any]:
    device_id, account_id = str(uuid.uuid4()), str(uuid.uuid4())
    live_devices = {str(uuid.uuid4()): str(uuid.uuid4()) for _ in range(args.live_devices)}
    parts = history_parts(account_id, device_id, args.messages, args.chats, args.part)
    nc = await nats.connect(args.nats_url)
    await purge(nc)
    live = Live(live_devices)
    sub = await nc.subscribe("app.>", cb=live.on_app)
    async with services(
        ["messaging"],
        db_url,
        "",
        args.nats_url,
        1000,
        args.media_dir,
        Path(args.log_dir),
        args.workdir,
    ):
        # warm up and measure live latency alone
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(args.idle_seconds, stop.set)
        idle_ids = await live.send(nc, args.live_rate, stop, "idle")
        await asyncio.sleep(1)

        # the import, with live messages of other devices all along
        stop = asyncio.Event()
        live_task = asyncio.create_task(live.send(nc, args.live_rate, stop, "during"))
        js = nc.jetstream()
        started = time.perf_counter()
        for subject, payload, msg_id in parts:
            await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
        published = time.perf_counter() - started
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.done.wait(), args.timeout)
        stop.set()
        during_ids = await live_task
        await asyncio.sleep(1)
        if live.synced_at is None:
            raise RuntimeError(f"history_synced did not arrive within {args.timeout}s")
        import_seconds = live.synced_at - started
        conn = await asyncpg.connect(db_url, server_settings={"search_path": "messaging"})
        try:
            stored = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE device_id = $1", uuid.UUID(device_id)
            )
            unread = await conn.fetchval(
                "SELECT coalesce(sum(unread_count), 0) FROM chats WHERE device_id = $1",
                uuid.UUID(device_id),
            )
        finally:
            await conn.close()
    await sub.unsubscribe()
    await nc.close()
    raw = await raw_ceiling(db_url, device_id, args.part * HISTORY_BATCH_PARTS)
    return {
        "cpus": os.cpu_count(),
        "messages": args.messages,
        "chats": args.chats,
        "parts": len(parts),
        "published_seconds": round(published, 2),
        "import_seconds": round(import_seconds, 2),
        "import_per_s": round(args.messages / import_seconds),
        "stored": stored,
        "unread_after": unread,
        "history_synced": live.synced,
        "new_message_events_during_import_not_live": live.new_messages - len(live.latency),
        "live_rate": args.live_rate,
        "live_devices": args.live_devices,
        "live_idle_ms": live.stats(idle_ids),
        "live_during_import_ms": live.stats(during_ids),
        "raw_insert": {
            "rows": raw["rows"],
            "seconds": round(raw["seconds"], 2),
            "rows_per_s": round(raw["rows_per_s"]),
        },
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--nats-url", default=None, help="default: a private nats-server")
    parser.add_argument("--database-url", default=benchenv.DEFAULT_POSTGRES)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--chats", type=int, default=500)
    parser.add_argument("--part", type=int, default=1000, help="messages per history part")
    parser.add_argument("--live-devices", type=int, default=20)
    parser.add_argument("--live-rate", type=float, default=20, help="live messages a second")
    parser.add_argument("--idle-seconds", type=float, default=5)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--media-dir", default="./var/bench-media")
    parser.add_argument("--log-dir", default="./var/bench-logs")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.media_dir = os.path.abspath(args.media_dir)
    args.log_dir = os.path.abspath(args.log_dir)
    args.workdir = benchenv.isolate()
    return args


async def main(args: argparse.Namespace) -> None:
    with benchenv.servers(args.nats_url, "") as servers:
        args.nats_url = servers.nats_url
        async with fresh_database(args.database_url, args.keep_db) as db_url:
            report = await run(args, db_url)
    if args.json:
        print(json.dumps(report))
        return
    idle, during, raw = (
        report["live_idle_ms"],
        report["live_during_import_ms"],
        report["raw_insert"],
    )
    print(
        f"history import ({report['cpus']} CPUs): {report['messages']} messages in "
        f"{report['chats']} chats, {report['parts']} parts\n"
        f"  import:  {report['import_seconds']} s to history_synced "
        f"({report['import_per_s']} msg/s), {report['stored']} stored, "
        f"unread after {report['unread_after']}, synced event {report['history_synced']}\n"
        f"  raw ceiling: the same {raw['rows']} rows by plain batched INSERT in "
        f"{raw['seconds']} s ({raw['rows_per_s']} rows/s)\n"
        f"  live messages of {report['live_devices']} other devices at "
        f"{report['live_rate']}/s, publish → new_message event:\n"
        f"    idle:          p50 {idle['p50']} ms, p90 {idle['p90']}, p99 {idle['p99']}, "
        f"max {idle['max']} ({idle['delivered']}/{idle['sent']})\n"
        f"    during import: p50 {during['p50']} ms, p90 {during['p90']}, "
        f"p99 {during['p99']}, max {during['max']} ({during['delivered']}/{during['sent']})\n"
        f"  new_message events not from live messages: "
        f"{report['new_message_events_during_import_not_live']}"
    )


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
