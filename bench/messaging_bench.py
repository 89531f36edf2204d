"""Inbound pipeline benchmark: simulated devices → NATS → messaging → PostgreSQL → WebSocket.

Publishes inbound WhatsApp message events straight to JetStream ``WA_EVENTS`` as
device workers do (many accounts and devices, ``Nats-Msg-Id`` = envelope id).
The bench starts the services it needs as real processes, on free ports, against
a fresh database: auth, messaging, leads (its consumer reads the same inbound
messages and creates the leads, as in production; ``--no-leads`` leaves it out)
and the gateway. It registers one account per simulated account through the
gateway (``POST /api/auth/register``), opens one WebSocket per account
(``/ws?token=``) and measures:

* sustained messages/s from the first publish to the last ``new_message`` frame;
* latency per message, publish → ``new_message`` frame received on the socket
  of its account (p50/p90/p99/max);
* beside it, in the same run and on the same table, the raw insert rate of the
  same rows: the consumer's own multi-row INSERT (one transaction per batch)
  and COPY.

``--sink nats`` stops one step earlier: latency to the ``app.{account}.new_message``
NATS event (what the gateway's hub forwards), without gateway, auth or sockets.

It needs a PostgreSQL server (it creates a fresh database and drops it
afterwards), a NATS server of its own (it purges WA_EVENTS/APP_EVENTS and deletes
their consumers) and, for the WebSocket sink, Redis: unless ``--nats-url`` /
``--redis-url`` name one, it starts private ones for the run. Every setting of the
services is passed explicitly; they run in an empty folder, so a `.env` changes
nothing. Service logs go to ``--log-dir``.

    uv run python bench/messaging_bench.py \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres --messages 60000 --rate 6000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import asyncpg
import benchenv
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
from clarin_devkit.testing import free_port

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
    """One socket per account on the gateway (``GET /ws?token=``), as a browser has."""

    def __init__(self, ws_url: str, tokens: dict[str, str], on_message: Any) -> None:
        self.ws_url = ws_url.rstrip("/")
        self.tokens = tokens
        self.on_message = on_message
        self.tasks: list[asyncio.Task[None]] = []
        self.ready = 0
        self.frames = 0
        self.closed: list[str] = []  # sockets the gateway closed while we listened

    async def start(self) -> None:
        import websockets

        async def listen(account_id: str, token: str) -> None:
            async with websockets.connect(
                f"{self.ws_url}/ws?token={token}", max_size=None, ping_interval=None
            ) as ws:
                self.ready += 1
                try:
                    async for raw in ws:
                        now = time.perf_counter()
                        self.frames += 1
                        frame = json.loads(raw)
                        if frame.get("type") == "new_message":
                            self.on_message(frame["data"]["message"]["wa_message_id"], now)
                except websockets.ConnectionClosed as exc:
                    self.closed.append(f"{account_id}: {exc}")
                    raise
                self.closed.append(f"{account_id}: closed by the gateway ({ws.close_code})")

        self.tasks = [asyncio.create_task(listen(a, t)) for a, t in self.tokens.items()]
        deadline = time.monotonic() + 20
        while self.ready < len(self.tasks):
            for task in self.tasks:
                if task.done():
                    task.result()  # a handshake that failed: raise it
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
    def make(cls, account_ids: list[str], devices: int, contacts: int) -> Fleet:
        """Devices spread over the accounts; the device ids need not exist in the
        devices service (messaging and leads take events of any device)."""
        return cls(
            accounts=account_ids,
            devices=[
                (account_ids[i % len(account_ids)], str(uuid.uuid4())) for i in range(devices)
            ],
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

    # --split: when the app event went by on NATS, to split the WebSocket latency in two
    on_nats_at: dict[str, float] = field(default_factory=dict)
    hops: list[tuple[float, float]] = field(default_factory=list)  # (to NATS, NATS → socket)

    def on_nats(self, wa_id: str, now: float) -> None:
        started = self.sent_at.get(wa_id)
        if started is not None:
            self.on_nats_at[wa_id] = now

    def on_message(self, wa_id: str, now: float) -> None:
        started = self.sent_at.pop(wa_id, None)
        if started is None:
            return
        seen = self.on_nats_at.pop(wa_id, None)
        if seen is not None:
            self.hops.append((seen - started, now - seen))
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


SERVICES = ("auth", "messaging", "leads", "gateway")


@dataclass
class Services:
    ports: dict[str, int]
    log_dir: Path
    pids: dict[str, int] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"


@contextlib.asynccontextmanager
async def services(
    names: list[str],
    database_url: str,
    redis_url: str,
    nats_url: str,
    batch_size: int,
    media_dir: str,
    log_dir: Path,
    workdir: Path,
) -> AsyncIterator[Services]:
    """The services as real processes (their console scripts, as tests/e2e/system.py
    starts them), each on a free port, logging at WARNING to ``log_dir``."""
    ports = {name: free_port() for name in SERVICES}
    # services not started get a port nobody listens on: their callers fail fast
    env = {
        **benchenv.clean_environ(),
        "CLARIN_ENV": "test",
        "CLARIN_DATABASE_URL": database_url,
        "CLARIN_REDIS_URL": redis_url,
        "CLARIN_NATS_URL": nats_url,
        "CLARIN_LOG_LEVEL": "WARNING",
        "CLARIN_LOG_JSON": "true",
        "CLARIN_MEDIA_DIR": media_dir,
        "AUTH_BCRYPT_ROUNDS": "4",
        "AUTH_PORT": str(ports["auth"]),
        "MESSAGING_PORT": str(ports["messaging"]),
        "MESSAGING_CONSUMER_BATCH_SIZE": str(batch_size),
        "MESSAGING_CONSUMER_FETCH_TIMEOUT": "0.05",
        "MESSAGING_DEVICES_URL": f"http://127.0.0.1:{free_port()}",
        "LEADS_PORT": str(ports["leads"]),
        "LEADS_AUTH_URL": f"http://127.0.0.1:{ports['auth']}",
        "GATEWAY_PORT": str(ports["gateway"]),
        "GATEWAY_AUTH_URL": f"http://127.0.0.1:{ports['auth']}",
        "GATEWAY_DEVICES_URL": f"http://127.0.0.1:{free_port()}",
        "GATEWAY_MESSAGING_URL": f"http://127.0.0.1:{ports['messaging']}",
        "GATEWAY_LEADS_URL": f"http://127.0.0.1:{ports['leads']}",
        # one register per simulated account, all from 127.0.0.1
        "GATEWAY_RATE_LIMIT_ENABLED": "false",
        "GATEWAY_STATIC_DIR": str(benchenv.ROOT / "frontend" / "dist"),
        "PYTHONUNBUFFERED": "1",
    }
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    system = Services(ports={n: ports[n] for n in names}, log_dir=log_dir)
    try:
        for name in names:
            with (log_dir / f"{name}.log").open("wb") as out:
                procs[name] = subprocess.Popen(  # noqa: ASYNC220 - before anything is timed
                    [sys.executable, "-c", f"from clarin_{name}.main import run; run()"],
                    env=env,
                    cwd=workdir,  # an empty folder: no .env applies
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
                system.pids[name] = procs[name].pid
        async with httpx.AsyncClient() as client:
            for name in names:
                for _ in range(600):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{system.url(name)}/readyz")).status_code == 200:
                            break
                    if procs[name].poll() is not None:
                        raise RuntimeError(f"{name} exited at startup, see {log_dir}/{name}.log")
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError(f"{name} did not become ready, see {log_dir}/{name}.log")
        yield system
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


async def register_accounts(base_url: str, n: int) -> dict[str, str]:
    """One account per simulated account through the gateway: account id → access token."""
    tag = uuid.uuid4().hex[:8]
    tokens: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for i in range(n):
            resp = await client.post(
                "/api/auth/register",
                json={
                    "account_name": f"Bench {tag} {i}",
                    "name": f"Bench admin {i}",
                    "email": f"bench-{tag}-{i}@example.com",
                    "password": "bench-password",
                },
            )
            if resp.status_code != 201:
                raise RuntimeError(f"register: {resp.status_code} {resp.text[:300]}")
            session = resp.json()
            tokens[session["account"]["id"]] = session["access_token"]
    return tokens


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
        # CPU of both ends (this process and its backend): the ceiling's cost per row,
        # which a busy machine disturbs less than its rate
        ends = [os.getpid(), int(await conn.fetchval("SELECT pg_backend_pid()"))]
        cpu_before = cpu_seconds(ends)
        started = time.perf_counter()
        for start in range(0, len(messages), batch_size):
            async with conn.transaction():
                await insert_many(conn, messages[start : start + batch_size])
        result["insert_unnest_per_s"] = len(messages) / (time.perf_counter() - started)
        result["insert_cpu_us_per_row"] = (
            1e6 * (cpu_seconds(ends) - cpu_before) / max(1, len(messages))
        )

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


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of processes, from /proc (those that have gone count 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:13]) / os.sysconf("SC_CLK_TCK")
    return total


def pids_of(needles: dict[str, str]) -> dict[str, list[int]]:
    """Processes to account CPU to: label → the pids whose command line holds the needle."""
    out: dict[str, list[int]] = {label: [] for label in needles}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            for label, needle in needles.items():
                if needle in cmd:
                    out[label].append(int(entry.name))
    return out


def latency_summary(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": round(pct(values, 0.50) * 1000, 1),
        "p90": round(pct(values, 0.90) * 1000, 1),
        "p99": round(pct(values, 0.99) * 1000, 1),
        "max": round(max(values) * 1000, 1) if values else None,
        "mean": round(statistics.fmean(values) * 1000, 1) if values else None,
    }


async def phase(
    args: argparse.Namespace,
    nc: NatsClient,
    tracker: Tracker,
    procs: Callable[[], dict[str, list[int]]],
    events: list[tuple[str, str, bytes, str]],
    rate: float,
) -> dict[str, Any]:
    """Publish ``events`` at ``rate`` (0: as fast as possible) and wait for all of
    them at the sink: rate, latency and CPU of each process over the phase."""
    tracker.latencies.clear()
    tracker.hops.clear()
    tracker.done.clear()
    tracker.expected = len(events)
    out: dict[str, Any] = {"target_rate": rate, "messages": len(events)}
    cpu_before = {pid: cpu_seconds([pid]) for pids in procs().values() for pid in pids}
    wall_before = time.perf_counter()
    pub_seconds = await publish(nc, events, tracker, rate, args.js_acks)
    try:
        await asyncio.wait_for(tracker.done.wait(), args.timeout)
    except TimeoutError:
        out["lost_or_late"] = len(tracker.sent_at)
        tracker.sent_at.clear()
    wall = time.perf_counter() - wall_before
    # a process that appeared during the phase counts whole
    cpu = {
        n: sum(cpu_seconds([pid]) - cpu_before.get(pid, 0.0) for pid in pids)
        for n, pids in procs().items()
    }
    lat = tracker.latencies
    delivered = max(1, len(lat))
    out["cpu_percent_of_one_core"] = {n: round(100 * v / wall) for n, v in cpu.items()}
    out["cpu_ms_per_msg"] = {n: round(1000 * v / delivered, 3) for n, v in cpu.items()}
    out["cpu_ms_per_msg"]["all"] = round(1000 * sum(cpu.values()) / delivered, 3)
    if tracker.hops:
        to_nats = [h[0] for h in tracker.hops]
        to_ws = [h[1] for h in tracker.hops]
        out["split_ms"] = {
            "publish_to_app_event": {
                q: round(pct(to_nats, v) * 1000, 1)
                for q, v in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
            },
            "app_event_to_ws_frame": {
                q: round(pct(to_ws, v) * 1000, 1)
                for q, v in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
            },
        }
    total = tracker.last_recv - tracker.first_pub
    out.update(
        {
            "published_per_s": round(len(events) / pub_seconds),
            "delivered": len(lat),
            "sustained_per_s": round(len(lat) / total) if total > 0 else 0,
            "latency_ms": latency_summary(lat),
        }
    )
    return out


def start_profiler(pids: list[int], path: str) -> subprocess.Popen[bytes]:
    """py-spy (``pip install py-spy``) on the messaging process for the measured phases."""
    exe = shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("--profile needs py-spy on PATH (pip install py-spy)")
    fmt = "speedscope" if path.endswith((".json", ".ss")) else "flamegraph"
    return subprocess.Popen(
        [exe, "record", "-p", str(pids[0]), "-o", path, "--format", fmt, "-r", "100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def run(args: argparse.Namespace, db_url: str) -> dict[str, Any]:
    ws = args.sink == "ws"
    names = ["messaging"]
    if not args.no_leads:
        names.append("leads")
    if ws:
        names += ["auth", "gateway"]
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
        "services": names,
        "cpus": os.cpu_count(),
        "loadavg_before": round(os.getloadavg()[0], 2),
    }
    try:
        await purge(nc)
        async with services(
            names,
            db_url,
            args.redis_url,
            args.nats_url,
            args.batch_size,
            args.media_dir,
            Path(args.log_dir),
            args.workdir,
        ) as system:
            tracker = Tracker()
            sink: Sink
            if ws:
                tokens = await register_accounts(system.url("gateway"), args.accounts)
                fleet = Fleet.make(list(tokens), args.devices, args.contacts)
                ws_url = system.url("gateway").replace("http://", "ws://", 1)
                sink = WebSocketSink(ws_url, tokens, tracker.on_message)
                report["measured_to"] = "WebSocket new_message frame (one socket per account)"
                if args.split:
                    split_sink = NatsAppEventSink(nc, tracker.on_nats)
                    await split_sink.start()
            else:
                fleet = Fleet.make(
                    [str(uuid.uuid4()) for _ in range(args.accounts)], args.devices, args.contacts
                )
                sink = NatsAppEventSink(nc, tracker.on_message)
                report["measured_to"] = "app.{account}.new_message NATS event"
            warmup = fleet.events(args.warmup, "WARM")
            await sink.start()

            def procs() -> dict[str, list[int]]:
                """Processes to account CPU to, looked up again at the end of a phase:
                a pool opens backends while the run goes."""
                nats_port = urlsplit(args.nats_url).port
                found = pids_of(
                    {
                        "nats-server": f"nats-server -a 127.0.0.1 -p {nats_port}",
                        # the backends of the bench database (the server is shared)
                        "postgres": f" postgres {urlsplit(db_url).path.lstrip('/')} ",
                    }
                )
                # the services this run started (other runs on the machine have their own)
                found.update({n: [system.pids[n]] for n in names})
                found["bench"] = [os.getpid()]
                return found

            profiler = None
            try:
                tracker.expected = len(warmup)
                await publish(nc, warmup, tracker, 0)
                await asyncio.wait_for(tracker.done.wait(), 60)
                if args.profile:
                    profiler = start_profiler(procs()["messaging"], args.profile)
                if args.find_max:
                    # phase 1: as fast as it goes gives the maximum rate ...
                    top = await phase(
                        args, nc, tracker, procs, fleet.events(args.messages, "MAX"), 0
                    )
                    report["max_phase"] = top
                    report["max_msg_s"] = top["sustained_per_s"]
                    # ... phase 2: the latency at 80 % of it
                    rate = round(0.8 * top["sustained_per_s"])
                    at80 = await phase(
                        args, nc, tracker, procs, fleet.events(args.messages, "AT80"), rate
                    )
                    report["at80_phase"] = at80
                    report["at80_target_msg_s"] = rate
                    report["at80_msg_s"] = at80["sustained_per_s"]
                    report["p50_ms"] = at80["latency_ms"]["p50"]
                    report["p99_ms"] = at80["latency_ms"]["p99"]
                    report["cpu_ms_per_msg"] = top["cpu_ms_per_msg"]
                    result = at80
                else:
                    result = await phase(
                        args, nc, tracker, procs, fleet.events(args.messages, "BENCH"), args.rate
                    )
                    report["cpu_ms_per_msg"] = result["cpu_ms_per_msg"]
                report.update(
                    {
                        k: result[k]
                        for k in (
                            "published_per_s",
                            "delivered",
                            "sustained_per_s",
                            "latency_ms",
                            "cpu_percent_of_one_core",
                        )
                    }
                )
                for key in ("lost_or_late", "split_ms"):
                    if key in result:
                        report[key] = result[key]
                report["loadavg_after"] = round(os.getloadavg()[0], 2)
            finally:
                if profiler is not None:
                    stop_profiler(profiler)
                await sink.stop()
            if isinstance(sink, WebSocketSink) and sink.closed:
                report["sockets_closed"] = sink.closed
    finally:
        await nc.close()
    return report


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--nats-url", default=None, help="default: a private nats-server for the run"
    )
    parser.add_argument(
        "--database-url",
        default=benchenv.DEFAULT_POSTGRES,
        help="a maintenance database; the bench creates (and drops) its own",
    )
    parser.add_argument(
        "--redis-url", default=None, help="default: a private redis-server (ws sink only)"
    )
    parser.add_argument(
        "--sink",
        choices=["ws", "nats"],
        default="ws",
        help="ws: to the WebSocket frame through a real gateway (default);\n"
        "nats: to the app.{account}.new_message NATS event (no gateway/auth)",
    )
    parser.add_argument(
        "--no-leads", action="store_true", help="leave the leads service (and its consumer) out"
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="ws sink: also time the app event on NATS, to split the latency in two",
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
    parser.add_argument("--media-dir", default="./var/bench-media")
    parser.add_argument("--log-dir", default="./var/bench-logs", help="the services' logs")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument(
        "--js-acks", action="store_true", help="publish waiting for every stream ack, as a worker"
    )
    parser.add_argument(
        "--find-max",
        action="store_true",
        help="two phases of --messages each: as fast as possible (max_msg_s), then at 80 %%\n"
        "of that rate (p50_ms, p99_ms); --rate is ignored",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy record of the messaging service over the measured phases\n"
        "(FILE.json: speedscope, else an SVG flame graph); needs py-spy on PATH",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args()
    args.media_dir = os.path.abspath(args.media_dir)
    args.log_dir = os.path.abspath(args.log_dir)
    args.workdir = benchenv.isolate()
    return args


async def main(args: argparse.Namespace) -> None:
    redis = args.redis_url if args.sink == "ws" else ""
    with benchenv.servers(args.nats_url, redis) as servers:
        args.nats_url, args.redis_url = servers.nats_url, servers.redis_url
        async with benchenv.fresh_database(args.database_url, args.keep_db) as db_url:
            report = await run(args, db_url)
            # the services have stopped: the same rows again, into the same table, alone
            raw = await raw_insert_rates(db_url, args.batch_size)
            report["raw_insert"] = {k: round(v) for k, v in raw.items()}
    report["insert_rows_s"] = report["raw_insert"]["insert_unnest_per_s"]
    report["copy_rows_s"] = report["raw_insert"]["copy_per_s"]
    top = report.get("max_msg_s", report["sustained_per_s"])
    report["ratio_to_insert"] = round(top / report["insert_rows_s"], 3)
    report["ratio_to_copy"] = round(top / report["copy_rows_s"], 3)
    report["insert_cpu_ms_per_row"] = round(report["raw_insert"]["insert_cpu_us_per_row"] / 1000, 3)
    report["cpu_ratio_to_insert"] = round(
        report["insert_cpu_ms_per_row"] / max(report["cpu_ms_per_msg"]["all"], 1e-9), 3
    )

    if args.json:
        print(json.dumps(report))
        return
    lat = report["latency_ms"]
    raw = report["raw_insert"]
    print(
        f"messaging pipeline ({report['cpus']} CPUs, load {report['loadavg_before']} before): "
        f"{report['messages']} inbound messages, "
        f"{report['accounts']} accounts, {report['devices']} devices, "
        f"batch {report['batch_size']}, {report['publish']}\n"
        f"  services:   {', '.join(report['services'])}\n"
        f"  measured to: {report['measured_to']}\n"
        f"  published:  {report['published_per_s']} msg/s (target {report['target_rate']:.0f})\n"
        f"  sustained:  {report['sustained_per_s']} msg/s end to end "
        f"({report['delivered']} delivered)\n"
        f"  latency:    p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms, "
        f"max {lat['max']} ms\n"
        f"  CPU (% of one core, during the run): "
        + ", ".join(f"{k} {v}" for k, v in report.get("cpu_percent_of_one_core", {}).items())
        + "\n"
        f"  raw insert of the same {raw['rows']} rows into messaging.messages: "
        f"{raw['insert_unnest_per_s']} rows/s (multi-row INSERT, one txn per batch), "
        f"{raw['copy_per_s']} rows/s (COPY)"
    )
    if "max_msg_s" in report:
        print(
            f"  find-max:   max {report['max_msg_s']} msg/s; at 80 % "
            f"({report['at80_target_msg_s']} msg/s): {report['at80_msg_s']} msg/s, "
            f"p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms"
        )
    print(
        f"  ratio:      {report['ratio_to_insert']} of the multi-row INSERT, "
        f"{report['ratio_to_copy']} of COPY; CPU per message {report['cpu_ratio_to_insert']}"
        f" of the INSERT's per row ({report['insert_cpu_ms_per_row']} ms)\n"
        "  CPU ms/msg: " + ", ".join(f"{k} {v}" for k, v in report["cpu_ms_per_msg"].items())
    )
    if "split_ms" in report:
        print(f"  split:      {json.dumps(report['split_ms'])}")
    if report.get("lost_or_late"):
        print(f"  NOT DELIVERED within the timeout: {report['lost_or_late']}")
    for line in report.get("sockets_closed", []):
        print(f"  socket closed: {line}")


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
