"""REST API benchmark: `GET /api/chats` through the gateway vs straight to messaging,
and login throughput beside the password hash alone.

Starts auth, messaging and the gateway as real processes (their console entry
points, each on a free port, in an empty folder: no `.env` applies) against a
fresh database, a private nats-server and a private Redis (unless named). It
registers one account through the gateway and seeds ``--chats`` chats through
the pipeline (one inbound message from each of as many contacts, published to
JetStream ``WA_EVENTS`` as a device worker does), then measures:

* ``GET /api/chats`` (the first page, 50 chats, newest first) with the same token,
  ``--concurrency`` clients on keep-alive connections (aiohttp), straight to the
  messaging service and through the gateway, interleaved over ``--rounds``
  rounds: req/s, p50/p99. Straight to messaging is the ceiling of the gateway.
* ``POST /api/auth/login`` through the gateway (``--login-concurrency`` clients,
  the rate limit off so that one email can log in repeatedly) at the bcrypt cost
  the service runs with (``--bcrypt-rounds``, 12 as in production): req/s,
  p50/p99. The ceiling, in the same run: one bcrypt check of the same cost
  timed alone in this process (one core), times the cores.

    uv run python bench/api_bench.py --json      # --chats 300 --requests 2000 --logins 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import benchenv
import nats

from clarin_common.events import WaMessage, wa_envelope, wa_event_subject
from clarin_common.nats import encode, ensure_streams
from clarin_devkit.testing import free_port

SERVICES = ("auth", "messaging", "gateway")
PASSWORD = "bench-password-1"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class System:
    ports: dict[str, int]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"


@contextlib.asynccontextmanager
async def services(
    args: argparse.Namespace, database_url: str, nats_url: str, redis_url: str, workdir: Path
) -> AsyncIterator[System]:
    """auth, messaging and the gateway as processes; every setting they depend on
    is passed here (the caller's environment and `.env` play no part)."""
    ports = {name: free_port() for name in SERVICES}
    nobody = f"http://127.0.0.1:{free_port()}"  # services not started: callers fail fast
    env = {
        **benchenv.clean_environ(),
        "CLARIN_ENV": "test",
        "CLARIN_DATABASE_URL": database_url,
        "CLARIN_REDIS_URL": redis_url,
        "CLARIN_NATS_URL": nats_url,
        "CLARIN_LOG_LEVEL": "WARNING",
        "CLARIN_LOG_JSON": "true",
        "CLARIN_MEDIA_DIR": str(workdir / "media"),
        "AUTH_PORT": str(ports["auth"]),
        "AUTH_BCRYPT_ROUNDS": str(args.bcrypt_rounds),
        "MESSAGING_PORT": str(ports["messaging"]),
        "MESSAGING_DEVICES_URL": nobody,
        "GATEWAY_PORT": str(ports["gateway"]),
        "GATEWAY_AUTH_URL": f"http://127.0.0.1:{ports['auth']}",
        "GATEWAY_DEVICES_URL": nobody,
        "GATEWAY_MESSAGING_URL": f"http://127.0.0.1:{ports['messaging']}",
        "GATEWAY_LEADS_URL": nobody,
        # one email logs in again and again from 127.0.0.1
        "GATEWAY_RATE_LIMIT_ENABLED": "false",
        "GATEWAY_STATIC_DIR": str(benchenv.ROOT / "frontend" / "dist"),
        "PYTHONUNBUFFERED": "1",
    }
    log_dir = Path(args.log_dir)
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in SERVICES:
            with (log_dir / f"api-{name}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(  # noqa: ASYNC220 - before anything is timed
                        [sys.executable, "-c", f"from clarin_{name}.main import run; run()"],
                        env=env,
                        cwd=workdir,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        for name, proc in zip(SERVICES, procs, strict=True):
            await benchenv.wait_ready(ports[name], proc, timeout=180)  # a busy host is slow
        yield System(ports)
    finally:
        await asyncio.to_thread(benchenv.stop_processes, procs)


async def register(gateway: str) -> tuple[str, str, str]:
    """One account through the gateway: (account id, email, access token)."""
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    async with aiohttp.ClientSession() as http:
        body = {"account_name": "Bench", "name": "Bench admin", "email": email}
        async with http.post(
            f"{gateway}/api/auth/register", json={**body, "password": PASSWORD}
        ) as resp:
            if resp.status != 201:
                raise RuntimeError(f"register: {resp.status} {(await resp.text())[:300]}")
            session = await resp.json()
    return session["account"]["id"], email, session["access_token"]


async def seed_chats(nats_url: str, database_url: str, account_id: str, chats: int) -> float:
    """One inbound message from each of ``chats`` contacts of one device, through
    the pipeline; waits until messaging stored every chat. Returns the seconds."""
    device_id = str(uuid.uuid4())
    nc = await nats.connect(nats_url)
    db = await asyncpg.connect(database_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        started = time.perf_counter()
        for i in range(chats):
            phone = f"521551{i:07d}"
            data = WaMessage(
                wa_message_id=f"SEED{i:08d}",
                chat_jid=f"{phone}@s.whatsapp.net",
                sender_jid=f"{phone}@s.whatsapp.net",
                push_name=f"Contact {i}",
                direction="in",
                type="text",
                body=f"Hola, quiero información del producto {i}",
                sent_at=datetime.now(UTC),
            )
            env = wa_envelope(account_id, device_id, "message", data)
            await js.publish(
                wa_event_subject(account_id, device_id, "message"),
                encode(env),
                headers={"Nats-Msg-Id": env.id},
            )
        deadline = time.monotonic() + 120
        while True:
            stored = await db.fetchval(
                "SELECT count(*) FROM messaging.chats WHERE account_id = $1", uuid.UUID(account_id)
            )
            if stored >= chats:
                return time.perf_counter() - started
            if time.monotonic() > deadline:
                raise RuntimeError(f"messaging stored {stored} of {chats} chats in 120 s")
            await asyncio.sleep(0.2)
    finally:
        await db.close()
        await nc.close()


@dataclass
class Load:
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def add(self, latencies: list[float], seconds: float) -> None:
        self.latencies += latencies
        self.requests += len(latencies)
        self.seconds += seconds

    def summary(self) -> dict[str, float]:
        lat = self.latencies
        return {
            "requests": self.requests,
            "per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(pct(lat, 0.50) * 1000, 1),
            "p99_ms": round(pct(lat, 0.99) * 1000, 1),
        }


async def hammer(
    n: int, concurrency: int, call: Callable[[aiohttp.ClientSession], Awaitable[None]]
) -> tuple[list[float], float]:
    """``n`` calls by ``concurrency`` clients sharing keep-alive connections:
    (latency of each, seconds from the first start to the last answer)."""
    latencies: list[float] = []
    remaining = n
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                await call(http)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


def chats_call(
    base_url: str, token: str, expected: int
) -> Callable[[aiohttp.ClientSession], Awaitable[None]]:
    headers = {"Authorization": f"Bearer {token}"}

    async def call(http: aiohttp.ClientSession) -> None:
        async with http.get(f"{base_url}/api/chats", headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET /api/chats: {resp.status} {body[:300]!r}")
            if len(json.loads(body)["items"]) != expected:
                raise RuntimeError(f"GET /api/chats: a page of {expected} chats expected")

    return call


def login_call(base_url: str, email: str) -> Callable[[aiohttp.ClientSession], Awaitable[None]]:
    async def call(http: aiohttp.ClientSession) -> None:
        async with http.post(
            f"{base_url}/api/auth/login", json={"email": email, "password": PASSWORD}
        ) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"POST /api/auth/login: {resp.status} {body[:300]!r}")

    return call


def bcrypt_checks_per_s(rounds: int, checks: int) -> float:
    """bcrypt checks of a password against a hash of ``rounds``, one after the
    other on this thread (one core): the ceiling of one login per core."""
    from clarin_auth.security import _hash_sync, _verify_sync

    stored = _hash_sync(PASSWORD, rounds)
    started = time.perf_counter()
    for _ in range(checks):
        if not _verify_sync(PASSWORD, stored):
            raise RuntimeError("bcrypt check failed")
    return checks / (time.perf_counter() - started)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    # `make bench` ends a benchmark past its timeout with SIGTERM: unwind, so that
    # the throw-away database is dropped and the private servers stop
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    cpus = os.cpu_count() or 1
    report: dict[str, Any] = {"cpus": cpus, "loadavg_before": round(os.getloadavg()[0], 2)}
    with benchenv.servers(args.nats_url, args.redis_url) as srv:
        async with (
            benchenv.fresh_database(args.database_url, prefix="clarin_bench_api") as db_url,
            services(args, db_url, srv.nats_url, srv.redis_url, workdir) as system,
        ):
            account_id, email, token = await register(system.url("gateway"))
            report["seed_s"] = round(
                await seed_chats(srv.nats_url, db_url, account_id, args.chats), 2
            )
            page = min(50, args.chats)
            targets = {"messaging": system.url("messaging"), "gateway": system.url("gateway")}
            loads = {name: Load() for name in targets}
            for url in targets.values():  # warm-up: connections and caches
                await hammer(50, args.concurrency, chats_call(url, token, page))
            per_round = max(1, args.requests // args.rounds)
            for _ in range(args.rounds):
                for name, url in targets.items():
                    lat, seconds = await hammer(
                        per_round, args.concurrency, chats_call(url, token, page)
                    )
                    loads[name].add(lat, seconds)
            chats = {name: load.summary() for name, load in loads.items()}
            chats["gateway_over_direct"] = {
                "per_s": round(chats["gateway"]["per_s"] / chats["messaging"]["per_s"], 3)
            }
            report["chats"] = {
                "chats_seeded": args.chats,
                "page": page,
                "concurrency": args.concurrency,
                **chats,
            }

            # the ceiling of login, alone, while the services idle
            per_core = await asyncio.to_thread(
                bcrypt_checks_per_s, args.bcrypt_rounds, args.hash_checks
            )
            lat, seconds = await hammer(
                args.logins, args.login_concurrency, login_call(system.url("gateway"), email)
            )
            login = Load()
            login.add(lat, seconds)
            report["login"] = {
                "bcrypt_rounds": args.bcrypt_rounds,
                "concurrency": args.login_concurrency,
                **login.summary(),
                "hash_alone_per_s_per_core": round(per_core, 2),
                "hash_ceiling_per_s": round(per_core * cpus, 2),
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
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server")
    parser.add_argument("--chats", type=int, default=300, help="chats of the account")
    parser.add_argument("--requests", type=int, default=2000, help="GET /api/chats per target")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per target")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--logins", type=int, default=16)
    parser.add_argument("--login-concurrency", type=int, default=4)
    parser.add_argument("--bcrypt-rounds", type=int, default=12, help="AUTH_BCRYPT_ROUNDS")
    parser.add_argument("--hash-checks", type=int, default=4, help="bcrypt checks timed alone")
    parser.add_argument("--log-dir", default="./var/bench-logs", help="the services' logs")
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args()
    args.log_dir = os.path.abspath(args.log_dir)
    workdir = benchenv.isolate()
    report = asyncio.run(run(args, workdir))
    if args.json:
        print(json.dumps(report))
        return
    c, login = report["chats"], report["login"]
    print(
        f"REST API ({report['cpus']} CPUs, load {report['loadavg_before']} before)\n"
        f"  GET /api/chats, {c['chats_seeded']} chats, pages of {c['page']}, "
        f"{c['concurrency']} clients:\n"
        f"    straight to messaging: {c['messaging']['per_s']} req/s, "
        f"p50 {c['messaging']['p50_ms']} ms, p99 {c['messaging']['p99_ms']} ms\n"
        f"    through the gateway:   {c['gateway']['per_s']} req/s, "
        f"p50 {c['gateway']['p50_ms']} ms, p99 {c['gateway']['p99_ms']} ms "
        f"({c['gateway_over_direct']['per_s']} of straight)\n"
        f"  POST /api/auth/login through the gateway, bcrypt cost {login['bcrypt_rounds']}, "
        f"{login['concurrency']} clients: {login['per_s']} req/s, p50 {login['p50_ms']} ms, "
        f"p99 {login['p99_ms']} ms\n"
        f"    bcrypt check alone: {login['hash_alone_per_s_per_core']}/s per core, "
        f"ceiling {login['hash_ceiling_per_s']}/s on {report['cpus']} cores"
    )


if __name__ == "__main__":
    main()
