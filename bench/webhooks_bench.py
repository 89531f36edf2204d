"""Webhook fan-out benchmark: APP_EVENTS → webhooks service → signed POSTs to one receiver.

Starts the webhooks service as a real process on a free port against a fresh
database, registers ``--webhooks`` webhooks (``*``) of one account that all point
at one local receiver (a separate process: a minimal asyncio HTTP/1.1 server that
answers 200 and notes when each event arrived), then publishes ``--events``
application events to ``APP_EVENTS`` at ``--rate`` per second, as the services do
after their commits (``Nats-Msg-Id`` = envelope id). It reports:

* **achieved deliveries/s**: deliveries received ÷ time from the first publish to
  the last arrival;
* **latency** per delivery, publish → arrival at the receiver (p50/p90/p99/max);
* **raw ceilings**, in the same run, to the same receiver, after the service has
  stopped: plain httpx POSTs of the same bodies with the same concurrency as the
  service (no NATS, no PostgreSQL, no signing), as fast as they go, with the
  latency of each POST and the client's CPU per POST (the first ``--httpx-events``
  bodies: httpx is slow here); then all of them with aiohttp
  (the client the service delivers with);
* CPU of the webhooks service, the receiver and the PostgreSQL backends of the
  bench database, in % of one core over the delivery run.

Without ``--nats-url`` a private nats-server from the project's environment is
started (the bench purges APP_EVENTS and deletes its consumers: never point it at
a NATS other things use). The database is created on ``--database-url``'s server
and dropped at the end.

    uv run python bench/webhooks_bench.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import benchenv
import httpx
import nats

from clarin_common.db import with_database
from clarin_common.events import APP_EVENTS_STREAM, ChatReadData, app_envelope, app_event_subject
from clarin_common.nats import ensure_streams
from clarin_devkit.testing import auth_headers, make_token

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- the receiver (its own process) --------------------------------------------------


class _ReceiverProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies only: just enough for the bench."""

    arrivals: list[tuple[str, float]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buf) < head_end + 4 + length:
                return
            body = self.buf[head_end + 4 : head_end + 4 + length]
            self.buf = self.buf[head_end + 4 + length :]
            self.handle(head.split(" ", 2), body)

    def handle(self, request_line: list[str], body: bytes) -> None:
        method, path = request_line[0], request_line[1]
        now = time.monotonic()
        out = b"ok"
        if method == "POST" and path.startswith("/hook"):
            # the event id travels in the body (the envelope); parse only that far
            start = body.find(b'"id":"') + 6
            self.arrivals.append((body[start : body.find(b'"', start)].decode(), now))
        elif path == "/stats":
            out = json.dumps(self.arrivals).encode()
        elif path == "/reset":
            self.arrivals.clear()
        self.transport.write(  # type: ignore[attr-defined]
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(out)).encode()
            + b"\r\n\r\n"
            + out
        )


def run_receiver(port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_ReceiverProtocol, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


# ---- helpers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total / CLK_TCK


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50_ms": round(at(0.50), 1),
        "p90_ms": round(at(0.90), 1),
        "p99_ms": round(at(0.99), 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 1),
    }


def pipeline_stages(metrics: str) -> dict[str, Any]:
    """Counts and mean durations of the service's stages, from its /metrics."""
    values: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("clarin_webhook_claimed_total{"):
            name, value = line.rsplit(" ", 1)
            values["claimed_by_" + name.split('by="')[1].split('"')[0]] = float(value)
        elif line.startswith("clarin_webhook_") and " " in line and "{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)

    def stage(name: str) -> dict[str, float]:
        count = values.get(f"clarin_webhook_{name}_seconds_count", 0.0)
        total = values.get(f"clarin_webhook_{name}_seconds_sum", 0.0)
        return {"count": int(count), "mean_ms": round(1000 * total / count, 2) if count else 0.0}

    claims = stage("claim")
    events = values.get("clarin_webhook_events_total", 0.0)
    fan_out = stage("fanout")
    return {
        "consumer_batches": fan_out,
        "events_per_batch": round(events / fan_out["count"], 1) if fan_out["count"] else 0,
        "claimed_at_birth_by_consumer": int(values.get("claimed_by_consumer", 0)),
        "claim_loop": claims,
        "claimed_by_claim_loop": int(values.get("claimed_by_claim_loop", 0)),
        "outcome_writes": stage("record"),
    }


@contextlib.contextmanager
def private_nats(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from clarin_devkit.devservers import ephemeral_servers

    with (
        tempfile.TemporaryDirectory(prefix="webhooks-bench-") as tmp,
        ephemeral_servers(Path(tmp), kinds={"nats"}) as servers,
    ):
        yield servers.nats_url


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)


async def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: process exited ({proc.returncode})")
            try:
                if (await client.get(url, timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready")
            await asyncio.sleep(0.1)


async def postgres_backend_pids(database_url: str) -> list[int]:
    conn = await asyncpg.connect(database_url)
    try:
        name = urlsplit(database_url).path.lstrip("/")
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        return [r["pid"] for r in rows]
    finally:
        await conn.close()


# ---- the two measurements --------------------------------------------------------------


def bodies_for(account_id: str, count: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(count):
        env = app_envelope(account_id, "chat_read", ChatReadData(chat_id=f"chat-{i % 500}"))
        out.append((env.id, env.model_dump_json().encode()))
    return out


async def raw_ceiling(
    url: str, bodies: list[tuple[str, bytes]], concurrency: int
) -> dict[str, Any]:
    """Plain httpx POSTs of the same bodies to the same receiver, as fast as they go."""
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for _, body in bodies:
        queue.put_nowait(body)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                resp = await client.post(
                    url, content=body, headers={"Content-Type": "application/json"}
                )
                resp.raise_for_status()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        cpu = time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu = time.process_time() - cpu
        elapsed = time.perf_counter() - started
    return {
        "posts": len(latencies),
        "seconds": round(elapsed, 2),
        "per_second": round(len(latencies) / elapsed),
        "latency": percentiles(latencies),
        "client_cpu_ms_per_post": round(1000 * cpu / max(len(latencies), 1), 3),
    }


async def raw_ceiling_aiohttp(
    url: str, bodies: list[tuple[str, bytes]], concurrency: int
) -> dict[str, Any]:
    """The same with aiohttp, the client the webhooks service delivers with."""
    import aiohttp

    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for _, body in bodies:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    resp.raise_for_status()
                    await resp.read()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        cpu = time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu = time.process_time() - cpu
        elapsed = time.perf_counter() - started
    return {
        "posts": len(latencies),
        "seconds": round(elapsed, 2),
        "per_second": round(len(latencies) / elapsed),
        "latency": percentiles(latencies),
        "client_cpu_ms_per_post": round(1000 * cpu / max(len(latencies), 1), 3),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(args.log_dir)
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    receiver_port, service_port = free_port(), free_port()
    receiver_url = f"http://127.0.0.1:{receiver_port}"
    result: dict[str, Any] = {
        "events": args.events,
        "offered_rate": args.rate,
        "webhooks": args.webhooks,
        "concurrency_per_webhook": args.per_webhook,
    }
    with private_nats(args.nats_url) as nats_url:
        async with benchenv.fresh_database(
            with_database(args.database_url, "postgres"), args.keep_db, prefix="clarin_whbench"
        ) as database_url:
            receiver = spawn(
                [sys.executable, __file__, "--receiver", str(receiver_port)],
                {**os.environ},
                log_dir / "receiver.log",
            )
            nc = await nats.connect(nats_url, pending_size=256 * 1024 * 1024)
            js = nc.jetstream()
            await ensure_streams(js)
            for consumer in await js.consumers_info(APP_EVENTS_STREAM):
                await js.delete_consumer(APP_EVENTS_STREAM, consumer.name)
            await js.purge_stream(APP_EVENTS_STREAM)
            env = {
                **os.environ,
                "CLARIN_ENV": "test",
                "CLARIN_DATABASE_URL": database_url,
                "CLARIN_NATS_URL": nats_url,
                "CLARIN_LOG_LEVEL": "WARNING",
                "CLARIN_LOG_JSON": "true",
                "CLARIN_DB_POOL_MAX": "20",
                "WEBHOOKS_PORT": str(service_port),
                "WEBHOOKS_MAX_IN_FLIGHT": str(args.per_webhook * args.webhooks),
                "WEBHOOKS_MAX_IN_FLIGHT_PER_WEBHOOK": str(args.per_webhook),
            }
            command = [str(Path(sys.executable).parent / "clarin-webhooks")]
            if args.profile:
                # uvicorn re-raises SIGTERM after its shutdown: dump on SIGUSR1 instead
                command = [
                    sys.executable,
                    "-c",
                    "import cProfile, signal; profile = cProfile.Profile(); "
                    "signal.signal(signal.SIGUSR1, "
                    f"lambda *_: profile.dump_stats({args.profile!r})); "
                    "profile.enable(); from clarin_webhooks.main import run; run()",
                ]
            service = spawn(command, env, log_dir / "webhooks.log")
            procs = [receiver, service]
            try:
                await wait_http(f"http://127.0.0.1:{service_port}/readyz", service)
                await wait_http(f"{receiver_url}/stats", receiver)
                account_id = str(uuid.uuid4())
                headers = auth_headers(make_token(account_id))
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service_port}") as api:
                    for i in range(args.webhooks):
                        resp = await api.post(
                            "/api/webhooks",
                            json={"url": f"{receiver_url}/hook/{i}", "events": ["*"]},
                            headers=headers,
                        )
                        resp.raise_for_status()

                bodies = bodies_for(account_id, args.events + args.warmup)
                subject = app_event_subject(account_id, "chat_read")

                async def publish(batch: list[tuple[str, bytes]], rate: float) -> dict[str, float]:
                    sent: dict[str, float] = {}
                    started = time.monotonic()
                    for i, (event_id, body) in enumerate(batch):
                        if rate > 0:
                            due = started + i / rate
                            delay = due - time.monotonic()
                            if delay > 0.002:
                                await asyncio.sleep(delay)
                        sent[event_id] = time.monotonic()
                        await nc.publish(subject, body, headers={"Nats-Msg-Id": event_id})
                    await nc.flush()
                    return sent

                async def arrivals(client: httpx.AsyncClient) -> list[tuple[str, float]]:
                    got: list[tuple[str, float]] = (
                        await client.get(f"{receiver_url}/stats")
                    ).json()
                    return got

                expected = args.events * args.webhooks
                async with httpx.AsyncClient(timeout=30) as client:
                    # warm-up: connections, caches, the consumer's first fetches
                    await publish(bodies[: args.warmup], args.rate)
                    deadline = time.monotonic() + args.timeout
                    while len(await arrivals(client)) < args.warmup * args.webhooks:
                        if time.monotonic() > deadline:
                            raise RuntimeError("warm-up deliveries did not arrive")
                        await asyncio.sleep(0.2)
                    await client.post(f"{receiver_url}/reset")

                    pg_pids = await postgres_backend_pids(database_url)
                    cpu_before = {
                        "webhooks": cpu_seconds([service.pid]),
                        "receiver": cpu_seconds([receiver.pid]),
                        "postgres": cpu_seconds(pg_pids),
                    }
                    wall = time.monotonic()
                    sent = await publish(bodies[args.warmup :], args.rate)
                    publish_seconds = time.monotonic() - wall
                    deadline = time.monotonic() + args.timeout
                    while True:
                        got = await arrivals(client)
                        if len(got) >= expected or time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.2)
                    elapsed = time.monotonic() - wall
                    cpu = {
                        "webhooks": cpu_seconds([service.pid]) - cpu_before["webhooks"],
                        "receiver": cpu_seconds([receiver.pid]) - cpu_before["receiver"],
                        "postgres": cpu_seconds(pg_pids) - cpu_before["postgres"],
                    }
                    latencies = [t - sent[e] for e, t in got if e in sent]
                    last = max((t for _, t in got), default=wall)
                    first = min(sent.values())
                    result["delivery"] = {
                        "delivered": len(got),
                        "expected": expected,
                        "publish_seconds": round(publish_seconds, 2),
                        "seconds": round(last - first, 2),
                        "per_second": round(len(got) / (last - first)) if got else 0,
                        "latency": percentiles(latencies),
                        "cpu_percent_of_one_core": {
                            k: round(100 * v / elapsed) for k, v in cpu.items()
                        },
                        "webhooks_cpu_ms_per_delivery": round(
                            1000 * cpu["webhooks"] / max(len(got), 1), 3
                        ),
                    }
                    metrics = await client.get(f"http://127.0.0.1:{service_port}/metrics")
                    result["delivery"]["stages"] = pipeline_stages(metrics.text)
                    await client.post(f"{receiver_url}/reset")
                    # the service is stopped first: the ceilings get the cores alone
                    if args.profile:
                        service.send_signal(signal.SIGUSR1)
                        await asyncio.sleep(2)
                    service.send_signal(signal.SIGTERM)
                    await asyncio.to_thread(service.wait, 30)
                    concurrency = args.per_webhook * args.webhooks
                    raw_bodies = bodies[args.warmup :]
                    result["raw_ceiling_httpx"] = await raw_ceiling(
                        f"{receiver_url}/hook/raw", raw_bodies[: args.httpx_events], concurrency
                    )
                    result["raw_ceiling_aiohttp"] = await raw_ceiling_aiohttp(
                        f"{receiver_url}/hook/raw", raw_bodies, concurrency
                    )
            finally:
                await nc.close()
                for proc in procs:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                for proc in procs:
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--nats-url", help="a private NATS (default: one started for the run)")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=2000, help="events/s offered; 0: no pacing")
    parser.add_argument("--webhooks", type=int, default=1, help="webhooks, all to the receiver")
    parser.add_argument("--per-webhook", type=int, default=64, help="attempts in flight each")
    parser.add_argument(
        "--httpx-events", type=int, default=3000, help="bodies for the (slow) httpx ceiling"
    )
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--log-dir", default="var/bench-logs")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--profile", help="write a cProfile of the service to this file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.receiver:
        run_receiver(args.receiver)
        return
    result = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    d = result["delivery"]
    print(
        f"webhooks: {d['delivered']}/{d['expected']} deliveries of {args.events} events "
        f"offered at {args.rate:g}/s to {args.webhooks} webhook(s)"
    )
    print(
        f"  achieved {d['per_second']}/s over {d['seconds']} s; latency publish → receiver "
        f"{d['latency']}"
    )
    print(f"  stages (warm-up included): {d['stages']}")
    print(
        f"  CPU % of one core: {d['cpu_percent_of_one_core']}; "
        f"webhooks service {d['webhooks_cpu_ms_per_delivery']} ms CPU per delivery"
    )
    for client in ("httpx", "aiohttp"):
        raw = result[f"raw_ceiling_{client}"]
        print(
            f"raw ceiling, plain {client} POSTs of the same bodies "
            f"({args.per_webhook * args.webhooks} concurrent): {raw['per_second']}/s, "
            f"latency {raw['latency']}, {raw['client_cpu_ms_per_post']} ms client CPU per POST"
        )


if __name__ == "__main__":
    main()
