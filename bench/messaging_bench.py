"""Inbound pipeline benchmark: simulated devices → NATS → messaging → PostgreSQL → app event.

Publishes inbound WhatsApp message events straight to JetStream ``WA_EVENTS`` as
device workers do (many accounts and devices, ``Nats-Msg-Id`` = envelope id),
with the real messaging service (its batch consumer, in its own process)
persisting them, and measures:

* sustained messages/s from the first publish to the last ``new_message``;
* latency per message, publish → ``app.{account}.new_message`` received
  (p50/p90/p99/max) — or → the WebSocket frame with ``--ws-url`` pointing at a
  running gateway (``Sink`` below; the NATS sink is the default);
* beside it, in the same run and on the same table, the raw insert rate of the
  same rows: the consumer's own multi-row INSERT (one transaction per batch)
  and COPY.

It needs a private NATS (it purges WA_EVENTS/APP_EVENTS) and a PostgreSQL
server; it creates a fresh database and drops it afterwards.

    uv run python bench/messaging_bench.py --nats-url nats://127.0.0.1:4304 \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres --messages 60000 --rate 6000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import nats
from nats.aio.client import Client as NatsClient

from clarin_common.events import (
    APP_EVENTS_STREAM,
    WA_EVENTS_STREAM,
    WaMessage,
    wa_envelope,
    wa_event_subject,
)
from clarin_common.nats import encode, ensure_streams

# ---- sinks: where a message counts as delivered ----------------------------------------


class Sink(Protocol):
    """Calls ``on_message(wa_message_id, received_at)`` for every new inbound message."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class NatsAppEventSink:
    """``app.*.new_message`` on NATS: what the gateway's WebSocket hub forwards."""

    def __init__(self, nc: NatsClient, on_message: Any) -> None:
        self.nc = nc
        self.on_message = on_message
        self.sub: Any = None

    async def start(self) -> None:
        async def cb(msg: Any) -> None:
            now = time.perf_counter()
            env = json.loads(msg.data)
            self.on_message(env["data"]["message"]["wa_message_id"], now)

        self.sub = await self.nc.subscribe("app.*.new_message", cb=cb, pending_msgs_limit=-1)
        await self.nc.flush()

    async def stop(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()


class WebSocketSink:
    """One socket per account on a running gateway (``GET /ws?token=``)."""

    def __init__(self, ws_url: str, tokens: dict[str, str], on_message: Any) -> None:
        self.ws_url = ws_url.rstrip("/")
        self.tokens = tokens
        self.on_message = on_message
        self.tasks: list[asyncio.Task[None]] = []
        self.ready = 0

    async def start(self) -> None:
        import websockets

        async def listen(token: str) -> None:
            async with websockets.connect(f"{self.ws_url}/ws?token={token}", max_size=None) as ws:
                self.ready += 1
                async for raw in ws:
                    now = time.perf_counter()
                    frame = json.loads(raw)
                    if frame.get("type") == "new_message":
                        self.on_message(frame["data"]["message"]["wa_message_id"], now)

        self.tasks = [asyncio.create_task(listen(t)) for t in self.tokens.values()]
        deadline = time.monotonic() + 10
        while self.ready < len(self.tasks):
            if time.monotonic() > deadline:
                raise RuntimeError("WebSockets did not connect")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# ---- the simulated devices ----------------------------------------------------------


@dataclass
class Fleet:
    accounts: list[str]
    devices: list[tuple[str, str]]  # (account_id, device_id)
    contacts: int

    @classmethod
    def make(cls, accounts: int, devices: int, contacts: int) -> Fleet:
        account_ids = [str(uuid.uuid4()) for _ in range(accounts)]
        return cls(
            accounts=account_ids,
            devices=[(account_ids[i % accounts], str(uuid.uuid4())) for i in range(devices)],
            contacts=contacts,
        )

    def events(self, n: int, prefix: str) -> list[tuple[str, str, bytes, str]]:
        """(subject, wa_message_id, payload, msg id) for n inbound messages."""
        out = []
        rnd = random.Random(42)
        for i in range(n):
            account_id, device_id = self.devices[i % len(self.devices)]
            phone = f"521550{rnd.randrange(self.contacts):07d}"
            wa_id = f"{prefix}{i:08d}"
            data = WaMessage(
                wa_message_id=wa_id,
                chat_jid=f"{phone}@s.whatsapp.net",
                sender_jid=f"{phone}@s.whatsapp.net",
                push_name=f"Contact {phone[-4:]}",
                direction="in",
                type="text",
                body=f"Hola, quiero información del producto {i}",
                sent_at=datetime.now(UTC),
            )
            env = wa_envelope(account_id, device_id, "message", data)
            out.append(
                (wa_event_subject(account_id, device_id, "message"), wa_id, encode(env), env.id)
            )
        return out


@dataclass
class Tracker:
    sent_at: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    first_pub: float = 0.0
    last_recv: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0

    def on_message(self, wa_id: str, now: float) -> None:
        started = self.sent_at.pop(wa_id, None)
        if started is None:
            return
        self.latencies.append(now - started)
        self.last_recv = now
        if len(self.latencies) >= self.expected:
            self.done.set()


async def publish(
    nc: NatsClient,
    events: list[tuple[str, str, bytes, str]],
    tracker: Tracker,
    rate: float,
    js_acks: bool = False,
) -> float:
    """Publish at ``rate`` msg/s (0 = as fast as possible) in ticks of 10 ms.

    By default the events go to the stream subjects as plain NATS publishes
    (JetStream stores them all the same, deduplicated by ``Nats-Msg-Id``): the
    device workers run in their own processes (their own machines in
    production), and a load generator waiting for a stream ack per message would
    eat the CPU the pipeline under test needs on a 2-core box. ``js_acks`` waits
    for every ack instead, exactly as a worker does.
    """
    js = nc.jetstream()
    tick = 0.01
    per_tick = max(1, int(rate * tick)) if rate else 500
    started = time.perf_counter()
    tracker.first_pub = started
    pending: set[asyncio.Future[Any]] = set()
    for start in range(0, len(events), per_tick):
        chunk = events[start : start + per_tick]
        now = time.perf_counter()
        for subject, wa_id, payload, msg_id in chunk:
            tracker.sent_at[wa_id] = now
            headers = {"Nats-Msg-Id": msg_id}
            if js_acks:
                pending.add(asyncio.ensure_future(js.publish(subject, payload, headers=headers)))
            else:
                await nc.publish(subject, payload, headers=headers)
        if not js_acks:
            await nc.flush()
        if rate:
            delay = started + (start + len(chunk)) / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        if pending and (len(pending) > 5000 or not rate):
            done, pending = await asyncio.wait(pending)
            for task in done:
                task.result()
    if pending:
        for task in (await asyncio.wait(pending))[0]:
            task.result()
    return time.perf_counter() - started


# ---- the service under test --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_db(url: str, name: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, f"/{name}", p.query, ""))


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, keep: bool) -> AsyncIterator[str]:
    name = f"clarin_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        yield with_db(admin_url, name)
    finally:
        if not keep:
            conn = await asyncpg.connect(admin_url)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()


@contextlib.asynccontextmanager
async def messaging_process(
    database_url: str, nats_url: str, batch_size: int, media_dir: str
) -> AsyncIterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "CLARIN_ENV": "dev",
        "CLARIN_DATABASE_URL": database_url,
        "CLARIN_NATS_URL": nats_url,
        "CLARIN_LOG_LEVEL": "WARNING",
        "CLARIN_MEDIA_DIR": media_dir,
        "MESSAGING_PORT": str(port),
        "MESSAGING_CONSUMER_BATCH_SIZE": str(batch_size),
        "MESSAGING_CONSUMER_FETCH_TIMEOUT": "0.05",
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
        [sys.executable, "-c", "from clarin_messaging.main import run; run()"], env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/readyz")).status_code == 200:
                        break
                if proc.poll() is not None:
                    raise RuntimeError("messaging exited at startup")
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("messaging did not become ready")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---- raw insert rate of the same rows --------------------------------------------------


async def raw_insert_rates(database_url: str, batch_size: int) -> dict[str, float]:
    """Re-insert the rows the pipeline stored into the same table: with the
    consumer's own statement, one transaction per batch, and with COPY."""
    from clarin_messaging.messages.repository import NewMessage, insert_many

    conn = await asyncpg.connect(database_url, server_settings={"search_path": "messaging"})
    try:
        rows = await conn.fetch(
            "SELECT id, account_id, chat_id, device_id, wa_message_id, direction, type, body,"
            " status, sender_jid, sender_name, sent_at, client_id FROM messages ORDER BY created_at"
        )
        records = [tuple(r) for r in rows]
        messages = [
            NewMessage(*(str(v) if i < 4 else v for i, v in enumerate(r)))  # type: ignore[arg-type]
            for r in records
        ]
        result: dict[str, float] = {"rows": float(len(rows))}

        await conn.execute("TRUNCATE messages CASCADE")
        started = time.perf_counter()
        for start in range(0, len(messages), batch_size):
            async with conn.transaction():
                await insert_many(conn, messages[start : start + batch_size])
        result["insert_unnest_per_s"] = len(messages) / (time.perf_counter() - started)

        await conn.execute("TRUNCATE messages CASCADE")
        columns = [
            "id", "account_id", "chat_id", "device_id", "wa_message_id", "direction", "type",
            "body", "status", "sender_jid", "sender_name", "sent_at", "client_id",
        ]  # fmt: skip
        started = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table("messages", records=records, columns=columns)
        result["copy_per_s"] = len(records) / (time.perf_counter() - started)
        return result
    finally:
        await conn.close()


# ---- the run ---------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def purge(nc: NatsClient) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    for stream in (WA_EVENTS_STREAM, APP_EVENTS_STREAM):
        for info in await js.consumers_info(stream):
            with contextlib.suppress(Exception):
                await js.delete_consumer(stream, info.name)
        await js.purge_stream(stream)


async def run(args: argparse.Namespace, db_url: str) -> dict[str, Any]:
    fleet = Fleet.make(args.accounts, args.devices, args.contacts)
    warmup = fleet.events(args.warmup, "WARM")
    events = fleet.events(args.messages, "BENCH")
    nc = await nats.connect(args.nats_url, pending_size=256 * 1024 * 1024)
    report: dict[str, Any] = {
        "messages": args.messages,
        "accounts": args.accounts,
        "devices": args.devices,
        "target_rate": args.rate,
        "batch_size": args.batch_size,
        "publish": "JetStream publish, ack awaited"
        if args.js_acks
        else "NATS publish into the stream",
        "cpus": os.cpu_count(),
    }
    try:
        await purge(nc)
        async with messaging_process(db_url, args.nats_url, args.batch_size, args.media_dir):
            tracker = Tracker()
            sink: Sink
            if args.ws_url:
                from clarin_common.testing import make_token

                tokens = {a: make_token(account_id=a) for a in fleet.accounts}
                sink = WebSocketSink(args.ws_url, tokens, tracker.on_message)
                report["measured_to"] = "WebSocket new_message frame"
            else:
                sink = NatsAppEventSink(nc, tracker.on_message)
                report["measured_to"] = "app.{account}.new_message NATS event"
            await sink.start()
            try:
                tracker.expected = len(warmup)
                await publish(nc, warmup, tracker, 0)
                await asyncio.wait_for(tracker.done.wait(), 60)

                tracker.latencies.clear()
                tracker.done.clear()
                tracker.expected = len(events)
                pub_seconds = await publish(nc, events, tracker, args.rate, args.js_acks)
                try:
                    await asyncio.wait_for(tracker.done.wait(), args.timeout)
                except TimeoutError:
                    report["lost_or_late"] = len(tracker.sent_at)
            finally:
                await sink.stop()
            lat = tracker.latencies
            total = tracker.last_recv - tracker.first_pub
            report.update(
                {
                    "published_per_s": round(len(events) / pub_seconds),
                    "delivered": len(lat),
                    "sustained_per_s": round(len(lat) / total) if total > 0 else 0,
                    "latency_ms": {
                        "p50": round(pct(lat, 0.50) * 1000, 1),
                        "p90": round(pct(lat, 0.90) * 1000, 1),
                        "p99": round(pct(lat, 0.99) * 1000, 1),
                        "max": round(max(lat) * 1000, 1) if lat else None,
                        "mean": round(statistics.fmean(lat) * 1000, 1) if lat else None,
                    },
                }
            )
    finally:
        await nc.close()
    return report


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--nats-url", default=os.environ.get("CLARIN_NATS_URL", "nats://127.0.0.1:4222")
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "CLARIN_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a maintenance database; the bench creates (and drops) its own",
    )
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument(
        "--rate", type=float, default=6_000, help="msg/s to publish (0: as fast as possible)"
    )
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--contacts", type=int, default=100, help="contacts per device")
    parser.add_argument("--batch-size", type=int, default=1000, help="consumer batch size")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument(
        "--ws-url", default=None, help="gateway base URL: measure to WebSocket frames"
    )
    parser.add_argument("--media-dir", default="./var/bench-media")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument(
        "--js-acks", action="store_true", help="publish waiting for every stream ack, as a worker"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args()

    async with fresh_database(args.database_url, args.keep_db) as db_url:
        report = await run(args, db_url)
        # the service has stopped: the same rows again, into the same table, alone
        raw = await raw_insert_rates(db_url, args.batch_size)
        report["raw_insert"] = {k: round(v) for k, v in raw.items()}

    if args.json:
        print(json.dumps(report))
        return
    lat = report["latency_ms"]
    raw = report["raw_insert"]
    print(
        f"messaging pipeline ({report['cpus']} CPUs): {report['messages']} inbound messages, "
        f"{report['accounts']} accounts, {report['devices']} devices, "
        f"batch {report['batch_size']}, {report['publish']}\n"
        f"  measured to: {report['measured_to']}\n"
        f"  published:  {report['published_per_s']} msg/s (target {report['target_rate']:.0f})\n"
        f"  sustained:  {report['sustained_per_s']} msg/s end to end "
        f"({report['delivered']} delivered)\n"
        f"  latency:    p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms, "
        f"max {lat['max']} ms\n"
        f"  raw insert of the same {raw['rows']} rows into messaging.messages: "
        f"{raw['insert_unnest_per_s']} rows/s (multi-row INSERT, one txn per batch), "
        f"{raw['copy_per_s']} rows/s (COPY)"
    )
    if report.get("lost_or_late"):
        print(f"  NOT DELIVERED within the timeout: {report['lost_or_late']}")


if __name__ == "__main__":
    asyncio.run(main())
