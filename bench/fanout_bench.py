"""WebSocket fan-out benchmark: ONE app event → every socket of one account.

Starts a private nats-server (unless ``--nats-url``), a fresh throw-away
PostgreSQL database, and the **auth** service and the **gateway** as real
processes (every setting explicit, see ``benchenv``). It registers one account,
opens ``--sockets`` WebSockets of that account on the gateway (``/ws?token=``)
and publishes ``--events`` ``app.{account}.new_message`` events on NATS, one at
a time, as messaging does after its commit. For each event it times publish →
the frame complete on the *last* socket (and on the first one).

In the same run, the raw ceiling: a minimal plain ``websockets`` server (its own
process, started by this script) holding the same number of sockets, that
subscribes to a NATS subject and sends each message's bytes as they are to every
socket with ``websockets.broadcast`` (no auth, no parsing, no queue). Events to
the gateway and to the ceiling alternate, so both see the same machine.

The sockets on the bench side are minimal asyncio protocols (handshake, then the
length of each server frame; no per-frame parsing), the same for both servers,
so the client costs the two the same. Every socket must receive every event
exactly once, one text frame each; one frame per run is parsed and checked.

``ratio`` = ceiling_p50_ms / p50_ms: the fraction of the plain server's speed the
gateway reaches (1.0 = as fast as the ceiling); ``cpu_ratio`` the same for the
CPU each server spends per event (read from /proc, steadier on a busy host).

    uv run python bench/fanout_bench.py --json   # defaults: --sockets 2000 --events 50
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchenv
import httpx
import nats

from clarin_devkit.testing import free_port

CEILING_SUBJECT = "bench.fanout.ceiling"
SCRIPT = Path(__file__).resolve()


# ---- the sockets of the bench: handshake, then count complete frames -----------------


class FrameCounter(asyncio.Protocol):
    """One client socket. Records when each complete text frame arrived; answers
    the server's pings (masked pong, as a client must)."""

    def __init__(self, path: str, host: str, on_frame: Any) -> None:
        self.path = path
        self.host = host
        self.on_frame = on_frame
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.frames = 0
        self.first_frame: bytes | None = None
        self.close_code: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buf += data
        if not self.upgraded.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buf[:end]).split(b"\r\n", 1)[0]
            del self.buf[: end + 4]
            if b" 101 " not in status:
                self.upgraded.set_exception(RuntimeError(f"handshake: {status!r}"))
                return
            self.upgraded.set_result(None)
        buf = self.buf
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            length = buf[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = int.from_bytes(buf[2:4], "big")
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = int.from_bytes(buf[2:10], "big")
                offset = 10
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            if opcode == 0x1:
                self.frames += 1
                if self.first_frame is None:
                    self.first_frame = payload
                self.on_frame(now)
            elif opcode == 0x9 and self.transport is not None:
                # pong with the same payload (< 126 bytes), masked with a zero key
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if payload else 1005

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionError("closed before the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)


class Fleet:
    """``n`` sockets on one server; waits for a frame on every one of them."""

    def __init__(self, name: str, port: int, path: str, n: int) -> None:
        self.name, self.port, self.path, self.n = name, port, path, n
        self.sockets: list[FrameCounter] = []
        self.received = 0
        self.first_at = 0.0
        self.last_at = 0.0
        self.all_in = asyncio.Event()

    def _on_frame(self, now: float) -> None:
        if self.received == 0:
            self.first_at = now
        self.received += 1
        if self.received >= self.n:
            self.last_at = now
            self.all_in.set()

    async def open(self, concurrency: int = 50) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)

        async def one() -> FrameCounter:
            async with gate:
                _, proto = await loop.create_connection(
                    lambda: FrameCounter(self.path, f"127.0.0.1:{self.port}", self._on_frame),
                    "127.0.0.1",
                    self.port,
                )
                await asyncio.wait_for(proto.upgraded, 30)
                return proto

        self.sockets = list(await asyncio.gather(*(one() for _ in range(self.n))))

    def arm(self) -> None:
        self.received = 0
        self.all_in.clear()

    def close(self) -> None:
        for sock in self.sockets:
            if sock.transport is not None:
                sock.transport.close()

    def closed_by_server(self) -> list[int | None]:
        return [s.close_code for s in self.sockets if s.close_code is not None]


# ---- the ceiling: a plain websockets server forwarding NATS bytes -----------------------


async def serve_ceiling(port: int, nats_url: str) -> None:
    """The plain server (run as its own process): every NATS message on
    CEILING_SUBJECT, as it is, to every open socket, with websockets.broadcast."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    conns: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    nc = await nats.connect(nats_url)

    async def on_msg(msg: Any) -> None:
        broadcast(conns, msg.data.decode())

    await nc.subscribe(CEILING_SUBJECT, cb=on_msg, pending_msgs_limit=-1)
    await nc.flush()
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        print("ready", flush=True)
        await asyncio.Future()


# ---- the services ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def processes(
    args: argparse.Namespace, db_url: str, redis_url: str
) -> AsyncIterator[dict[str, int]]:
    """auth, gateway and the ceiling server as processes, each on a free port."""
    ports = {"auth": free_port(), "gateway": free_port(), "ceiling": free_port()}
    env = {
        **benchenv.clean_environ(),
        "CLARIN_ENV": "test",
        "CLARIN_DATABASE_URL": db_url,
        "CLARIN_REDIS_URL": redis_url,
        "CLARIN_NATS_URL": args.nats_url,
        "CLARIN_LOG_LEVEL": "WARNING",
        "CLARIN_LOG_JSON": "true",
        "AUTH_BCRYPT_ROUNDS": "4",
        "AUTH_PORT": str(ports["auth"]),
        "GATEWAY_PORT": str(ports["gateway"]),
        "GATEWAY_AUTH_URL": f"http://127.0.0.1:{ports['auth']}",
        "GATEWAY_RATE_LIMIT_ENABLED": "false",
        "GATEWAY_STATIC_DIR": str(benchenv.ROOT / "frontend" / "dist"),
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DEVICES", "MESSAGING", "LEADS", "WEBHOOKS", "CAMPAIGNS"):
        # nobody listens there: the gateway's callers fail fast
        env[f"GATEWAY_{name}_URL"] = f"http://127.0.0.1:{free_port()}"
    log_dir = Path(args.log_dir)
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    commands = {
        "auth": [sys.executable, "-c", "from clarin_auth.main import run; run()"],
        "gateway": [sys.executable, "-c", "from clarin_gateway.main import run; run()"],
        "ceiling": [
            sys.executable,
            str(SCRIPT),
            "--serve-ceiling",
            str(ports["ceiling"]),
            "--nats-url",
            args.nats_url,
        ],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            with (log_dir / f"fanout-{name}.log").open("wb") as out:
                procs[name] = subprocess.Popen(  # noqa: ASYNC220 - before anything is timed
                    command,
                    env=env,
                    cwd=args.workdir,  # an empty folder: no .env applies
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        await benchenv.wait_ready(ports["auth"], procs["auth"], timeout=300)
        await benchenv.wait_ready(ports["gateway"], procs["gateway"], timeout=300)
        ceiling_log = log_dir / "fanout-ceiling.log"
        deadline = time.monotonic() + 30
        while b"ready" not in await asyncio.to_thread(ceiling_log.read_bytes):
            if procs["ceiling"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ceiling server did not start, see {ceiling_log}")
            await asyncio.sleep(0.1)
        yield {**ports, **{f"{n}_pid": p.pid for n, p in procs.items()}}
    finally:
        await asyncio.to_thread(benchenv.stop_processes, procs.values())


async def register(base_url: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        resp = await client.post(
            "/api/auth/register",
            json={
                "account_name": f"Fanout {tag}",
                "name": "Fanout admin",
                "email": f"fanout-{tag}@example.com",
                "password": "bench-password",
            },
        )
        if resp.status_code != 201:
            raise RuntimeError(f"register: {resp.status_code} {resp.text[:300]}")
        session = resp.json()
        return str(session["account"]["id"]), str(session["access_token"])


def new_message_event(account_id: str, i: int) -> bytes:
    """An ``app.{account}.new_message`` envelope the size messaging publishes."""
    now = datetime.now(UTC).isoformat()
    chat_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
    message = {
        "id": message_id,
        "chat_id": chat_id,
        "device_id": str(uuid.uuid4()),
        "wa_message_id": f"FANOUT{i:08d}",
        "direction": "in",
        "type": "text",
        "body": "Hola, quisiera saber el precio del plan mensual y si tiene descuento. " * 2,
        "status": "received",
        "sender_jid": "5215512345678@s.whatsapp.net",
        "sent_at": now,
        "created_at": now,
    }
    chat = {
        "id": chat_id,
        "jid": "5215512345678@s.whatsapp.net",
        "name": "Cliente de prueba",
        "unread_count": 1,
        "last_message_at": now,
        "status": "open",
    }
    envelope = {
        "id": str(uuid.uuid4()),
        "type": "new_message",
        "account_id": account_id,
        "device_id": None,
        "occurred_at": now,
        "data": {"message": message, "chat": chat},
    }
    return json.dumps(envelope).encode()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:13]) / os.sysconf("SC_CLK_TCK")


async def one_event(
    nc: Any, fleet: Fleet, subject: str, payload: bytes, timeout: float
) -> tuple[float, float]:
    """Publish, then wait for the frame on every socket: (to first, to last) in s."""
    fleet.arm()
    sent = time.perf_counter()
    await nc.publish(subject, payload)
    await nc.flush()
    try:
        await asyncio.wait_for(fleet.all_in.wait(), timeout)
    except TimeoutError:
        raise RuntimeError(
            f"{fleet.name}: {fleet.received}/{fleet.n} sockets got the event within {timeout} s"
            f" (closed by the server: {fleet.closed_by_server()[:5]})"
        ) from None
    return fleet.first_at - sent, fleet.last_at - sent


async def run(args: argparse.Namespace) -> dict[str, Any]:
    servers = benchenv.servers(args.nats_url, None)
    with servers as started:
        args.nats_url = started.nats_url
        async with (
            benchenv.fresh_database(args.database_url) as db_url,
            processes(args, db_url, started.redis_url) as ports,
        ):
            account_id, token = await register(f"http://127.0.0.1:{ports['gateway']}")
            gateway = Fleet("gateway", ports["gateway"], f"/ws?token={token}", args.sockets)
            ceiling = Fleet("ceiling", ports["ceiling"], "/", args.sockets)
            await gateway.open()
            await ceiling.open()
            nc = await nats.connect(args.nats_url)
            subject = f"app.{account_id}.new_message"
            try:
                results: dict[str, list[tuple[float, float]]] = {"gateway": [], "ceiling": []}
                cpu: dict[str, float] = {"gateway": 0.0, "ceiling": 0.0}
                for i in range(args.warmup + args.events):
                    payload = new_message_event(account_id, i)
                    for fleet, subj in ((gateway, subject), (ceiling, CEILING_SUBJECT)):
                        pid = ports[f"{fleet.name}_pid"]
                        before = cpu_seconds(pid)
                        timing = await one_event(nc, fleet, subj, payload, args.timeout)
                        if i >= args.warmup:
                            results[fleet.name].append(timing)
                            cpu[fleet.name] += cpu_seconds(pid) - before
                        # let the servers settle (ping/pong, GC) between events
                        await asyncio.sleep(args.pause)
            finally:
                await nc.close()
            frame = json.loads(gateway.sockets[0].first_frame or b"null")
            if not (isinstance(frame, dict) and frame.get("type") == "new_message"):
                raise RuntimeError(f"unexpected gateway frame: {frame!r}")
            if frame.get("account_id") != account_id:
                raise RuntimeError("the gateway sent another account's event")
            total = args.warmup + args.events
            for fleet in (gateway, ceiling):
                wrong = [s.frames for s in fleet.sockets if s.frames != total]
                if wrong:
                    raise RuntimeError(
                        f"{fleet.name}: sockets with {wrong[:5]} frames, not {total}"
                    )
            gateway.close()
            ceiling.close()

    def ms(values: list[float], q: float) -> float:
        return round(pct(values, q) * 1000, 2)

    last = {n: [t[1] for t in r] for n, r in results.items()}
    first = {n: [t[0] for t in r] for n, r in results.items()}
    report = {
        "sockets": args.sockets,
        "events": args.events,
        "frame_bytes": len(payload),
        "p50_ms": ms(last["gateway"], 0.5),
        "p99_ms": ms(last["gateway"], 0.99),
        "max_ms": ms(last["gateway"], 1.0),
        "first_socket_p50_ms": ms(first["gateway"], 0.5),
        "ceiling_p50_ms": ms(last["ceiling"], 0.5),
        "ceiling_p99_ms": ms(last["ceiling"], 0.99),
        "ceiling_max_ms": ms(last["ceiling"], 1.0),
        "ceiling_first_socket_p50_ms": ms(first["ceiling"], 0.5),
        "ratio": round(statistics.median(last["ceiling"]) / statistics.median(last["gateway"]), 3),
        # server CPU per event, in ms
        "gateway_cpu_ms_per_event": round(1000 * cpu["gateway"] / args.events, 2),
        "ceiling_cpu_ms_per_event": round(1000 * cpu["ceiling"] / args.events, 2),
        # the same ratio for the server's CPU: less noisy on a shared machine
        "cpu_ratio": round(cpu["ceiling"] / cpu["gateway"], 3) if cpu["gateway"] else None,
        "cpus": os.cpu_count(),
        "loadavg": round(os.getloadavg()[0], 2),
    }
    return report


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=2000, help="sockets of the one account")
    parser.add_argument("--events", type=int, default=50, help="events timed (each to all)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between events")
    parser.add_argument("--timeout", type=float, default=30, help="per event")
    parser.add_argument(
        "--nats-url", default=None, help="default: a private nats-server for the run"
    )
    parser.add_argument(
        "--database-url",
        default=benchenv.DEFAULT_POSTGRES,
        help="a maintenance database; the bench creates (and drops) its own for auth",
    )
    parser.add_argument("--log-dir", default="./var/bench-logs", help="the processes' logs")
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    parser.add_argument("--serve-ceiling", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.log_dir = os.path.abspath(args.log_dir)
    if args.serve_ceiling is None:
        args.workdir = benchenv.isolate()
    return args


def main() -> None:
    args = parse_args()
    if args.serve_ceiling is not None:
        asyncio.run(serve_ceiling(args.serve_ceiling, args.nats_url))
        return
    report = asyncio.run(run(args))
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"fan-out of one app event to {report['sockets']} sockets of one account, "
        f"{report['events']} events of {report['frame_bytes']} bytes "
        f"({report['cpus']} CPUs, load {report['loadavg']})\n"
        f"  gateway:  publish → last socket p50 {report['p50_ms']} ms, "
        f"p99 {report['p99_ms']} ms (first socket p50 {report['first_socket_p50_ms']} ms), "
        f"CPU {report['gateway_cpu_ms_per_event']} ms/event\n"
        f"  ceiling:  publish → last socket p50 {report['ceiling_p50_ms']} ms, "
        f"p99 {report['ceiling_p99_ms']} ms (first socket p50 "
        f"{report['ceiling_first_socket_p50_ms']} ms), "
        f"CPU {report['ceiling_cpu_ms_per_event']} ms/event "
        "(plain websockets.broadcast of the NATS bytes)\n"
        f"  ratio:    {report['ratio']} of the ceiling (ceiling p50 / gateway p50); "
        f"CPU: {report['cpu_ratio']} (ceiling CPU / gateway CPU per event)"
    )


if __name__ == "__main__":
    main()
