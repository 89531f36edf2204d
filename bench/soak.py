"""Soak: the whole system for ``--duration`` seconds, steady traffic, a worker restarted halfway.

Starts every process the product runs, as real processes on free ports, against a
throw-away PostgreSQL database and a private nats-server and Redis (benchenv: no
``.env``, every setting explicit): auth, the devices API, ``--workers`` device
workers (simulator driver), messaging, leads and the gateway. Through the gateway
it registers ``--accounts`` accounts, adds an agent to each, creates ``--devices``
devices spread over them and links every one (connect, then the simulated phone
scans the QR code). It primes the system (``--prime`` seconds, 0 for none): every
device gets one inbound message and sends one, then the traffic below runs
``--prime-factor`` (10) times faster for ``--prime`` (40) seconds, and the soak waits
until all of it is stored and on the phones (checked like the run itself). What a
process keeps once, per device or per stream, is then in place: the chats, leads
and send-queue consumers of every device, and nats-server's first blocks of every
busy stream (its RSS rises with the first ~30 MB its streams store, then stays).
Then, for ``--duration`` seconds:

* inbound: contacts write to random devices at ``--in-rate`` per second
  (``sim.{device}.inbound`` with our own ``wa_message_id``; a request that fails
  while its device moves between workers is repeated with the same id);
* outbound: the agents send at ``--out-rate`` per second
  (``POST /api/messages/send`` with a ``client_id``, repeated on a 5xx/timeout);
* halfway, worker 1 gets SIGTERM (``--kill``: SIGKILL) and is started again;
* every ``--interval`` seconds the RSS (``VmRSS``) and CPU time of every process
  is sampled: the services, each worker (the restarted worker is a new series),
  nats-server, redis-server and this process.

Then the traffic stops and the script waits (``--drain`` at most) until every
inbound message the simulator accepted is stored in ``messaging.messages``, every
accepted send has reached the simulated phone (``simphone.{device}``) and is
``sent``/``delivered``/``read``. It reports what was lost or duplicated and, per
process, a least-squares line over the RSS samples after the warm-up (the first
``--warmup`` fraction of the run, at least of each series): MB/min and % of the
mean per 10 min. A process fails when its slope is above ``--max-mb-per-min`` (1)
**and** above ``--max-pct-per-10min`` (5 %) of its mean. A process that lives
through the restart also gets a line before it and one after it settled
(``--settle``): a rise that is only the step at the restart (the surviving worker
takes over the stopped one's devices) passes when both lines are flat. The script
exits 1 when anything is lost or duplicated, a process exited on its own or a
process fails.

    uv run python bench/soak.py                       # 600 s, 500 devices (make soak)
    uv run python bench/soak.py --duration 90 --devices 50 --json-out var/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import benchenv
import httpx
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from clarin_common import nats as natsmod
from clarin_common.db import with_database
from clarin_devkit.devservers import ephemeral_servers
from clarin_devkit.testing import free_port

TICKS = os.sysconf("SC_CLK_TCK")
SERVICES = ("auth", "devices", "messaging", "leads", "gateway")
PASSWORD = "soak-password-1"


# ---- /proc ---------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    """VmRSS of a live process, None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# ---- processes and their RSS series ----------------------------------------------------


@dataclass
class Series:
    """One process lifetime: a restarted worker is a new series."""

    name: str
    pid: int
    started_s: float  # seconds since the soak clock started (may be negative: set-up)
    ready_s: float | None = None  # a restarted worker: when it answered /readyz again
    samples: list[tuple[float, int]] = field(default_factory=list)  # (t s, RSS KiB)
    cpu_start: float | None = None
    cpu_last: float | None = None
    ended_s: float | None = None


@dataclass
class System:
    env: dict[str, str]
    workdir: Path
    log_dir: Path
    ports: dict[str, int]
    clock0: float = 0.0  # time.monotonic() of the soak's start
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    series: list[Series] = field(default_factory=list)
    stopped: set[int] = field(default_factory=set)  # pids the soak itself stopped

    def now(self) -> float:
        return time.monotonic() - self.clock0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def track(self, name: str, pid: int) -> None:
        runs = sum(1 for s in self.series if s.name.split("#")[0] == name)
        label = name if runs == 0 else f"{name}#{runs + 1}"
        self.series.append(Series(label, pid, self.now(), cpu_start=cpu_seconds(pid)))

    def start(self, name: str) -> None:
        cmd, extra = self.commands[name]
        with (self.log_dir / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                env={**self.env, **extra},
                cwd=self.workdir,  # an empty folder: no .env applies
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = proc
        self.track(name, proc.pid)

    def dead(self) -> dict[str, int]:
        """Processes that exited without being stopped by the soak: name → exit code
        (negative: the signal that ended it)."""
        return {
            name: proc.returncode
            for name, proc in self.procs.items()
            if proc.poll() is not None and proc.pid not in self.stopped
        }

    def end_series(self, pid: int) -> None:
        for s in self.series:
            if s.pid == pid and s.ended_s is None:
                s.ended_s = self.now()

    async def wait_ready(self, name: str, timeout: float = 120) -> None:
        proc = self.procs[name]
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}, see {self.log_dir}/{name}.log"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url(name)}/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{name} did not become ready, see {self.log_dir}/{name}.log")

    async def stop(self, name: str, sig: signal.Signals) -> float:
        """Signal one process and wait for it to exit; the seconds it took."""
        proc = self.procs[name]
        started = time.monotonic()
        self.stopped.add(proc.pid)
        proc.send_signal(sig)
        try:
            await asyncio.to_thread(proc.wait, 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        self.end_series(proc.pid)
        return time.monotonic() - started

    def sample(self) -> None:
        t = self.now()
        for s in self.series:
            if s.ended_s is not None:
                continue
            rss = rss_kib(s.pid)
            if rss is None:
                s.ended_s = t
                continue
            s.samples.append((t, rss))
            s.cpu_last = cpu_seconds(s.pid)


def server_pid(root: Path, kind: str) -> int:
    """The pid of a private server that ephemeral_servers started under ``root``."""
    [pidfile] = root.glob(f"devservers-*/{kind}/{kind}.pid")
    return int(pidfile.read_text().split()[0])


@contextlib.contextmanager
def private_servers() -> Iterator[tuple[str, str, dict[str, int]]]:
    """A private nats-server and Redis for the run, with their pids."""
    with (
        tempfile.TemporaryDirectory(prefix="clarin-soak-servers-") as tmp,
        ephemeral_servers(Path(tmp), kinds=("nats", "redis")) as started,
    ):
        pids = {"nats-server": server_pid(Path(tmp), "nats")}
        pids["redis-server"] = server_pid(Path(tmp), "redis")
        yield started.nats_url, started.redis_url, pids


def system_for(
    args: argparse.Namespace, database_url: str, nats_url: str, redis_url: str, workdir: Path
) -> System:
    ports = {name: free_port() for name in SERVICES}
    for i in range(1, args.workers + 1):
        ports[f"worker{i}"] = free_port()
    run_id = uuid.uuid4().hex[:6]
    env = {
        **benchenv.clean_environ(),
        "CLARIN_ENV": "test",
        "CLARIN_DATABASE_URL": database_url,
        "CLARIN_REDIS_URL": redis_url,
        "CLARIN_NATS_URL": nats_url,
        "CLARIN_MEDIA_DIR": str(workdir / "media"),
        "CLARIN_LOG_JSON": "true",
        "CLARIN_LOG_LEVEL": "WARNING",
        "WHATSAPP_DRIVER": "simulator",
        "AUTH_BCRYPT_ROUNDS": "4",
        "AUTH_PORT": str(ports["auth"]),
        "DEVICES_PORT": str(ports["devices"]),
        "MESSAGING_PORT": str(ports["messaging"]),
        "MESSAGING_DEVICES_URL": f"http://127.0.0.1:{ports['devices']}",
        "MESSAGING_AUTH_URL": f"http://127.0.0.1:{ports['auth']}",
        "LEADS_PORT": str(ports["leads"]),
        "LEADS_AUTH_URL": f"http://127.0.0.1:{ports['auth']}",
        "GATEWAY_PORT": str(ports["gateway"]),
        "GATEWAY_METRICS_PORT": str(free_port()),
        "GATEWAY_AUTH_URL": f"http://127.0.0.1:{ports['auth']}",
        "GATEWAY_DEVICES_URL": f"http://127.0.0.1:{ports['devices']}",
        "GATEWAY_MESSAGING_URL": f"http://127.0.0.1:{ports['messaging']}",
        "GATEWAY_LEADS_URL": f"http://127.0.0.1:{ports['leads']}",
        # webhooks and campaigns are not started: their routes fail fast
        "GATEWAY_WEBHOOKS_URL": f"http://127.0.0.1:{free_port()}",
        "GATEWAY_CAMPAIGNS_URL": f"http://127.0.0.1:{free_port()}",
        "GATEWAY_STATIC_DIR": str(benchenv.ROOT / "frontend" / "dist"),
        "WORKER_MEMBERS_BUCKET": f"soak_workers_{run_id}",
        "WORKER_LEASES_BUCKET": f"soak_leases_{run_id}",
        "PYTHONUNBUFFERED": "1",
    }
    system = System(env=env, workdir=workdir, log_dir=Path(args.log_dir), ports=ports)
    exe = [sys.executable, "-c"]
    for name in SERVICES:
        system.commands[name] = ([*exe, f"from clarin_{name}.main import run; run()"], {})
    for i in range(1, args.workers + 1):
        system.commands[f"worker{i}"] = (
            [*exe, "from clarin_devices.worker.main import run; run()"],
            {"WORKER_ID": f"soak-{run_id}-{i}", "WORKER_PORT": str(ports[f"worker{i}"])},
        )
    return system


# ---- accounts, agents and devices through the gateway ----------------------------------


@dataclass
class Agent:
    """An agent of one account, with a session that is refreshed when it expires."""

    account_id: str
    access_token: str
    refresh_token: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self, http: httpx.AsyncClient, stale: str) -> None:
        async with self.lock:
            if self.access_token != stale:
                return  # another request refreshed it meanwhile
            resp = await http.post("/api/auth/refresh", json={"refresh_token": self.refresh_token})
            resp.raise_for_status()
            self.access_token = resp.json()["access_token"]
            self.refresh_token = resp.json()["refresh_token"]


async def set_up_accounts(http: httpx.AsyncClient, accounts: int) -> tuple[list[str], list[Agent]]:
    """One admin and one agent per account: the admins' tokens and the agents."""
    tag = uuid.uuid4().hex[:8]
    admins: list[str] = []
    agents: list[Agent] = []
    for i in range(accounts):
        resp = await http.post(
            "/api/auth/register",
            json={
                "account_name": f"Soak {tag} {i}",
                "name": f"Soak admin {i}",
                "email": f"soak-{tag}-{i}@example.com",
                "password": PASSWORD,
            },
        )
        resp.raise_for_status()
        admin = resp.json()
        admins.append(admin["access_token"])
        agent_email = f"soak-agent-{tag}-{i}@example.com"
        resp = await http.post(
            "/api/users",
            json={
                "name": f"Agent {i}",
                "email": agent_email,
                "password": PASSWORD,
                "role": "agent",
            },
            headers={"Authorization": f"Bearer {admin['access_token']}"},
        )
        resp.raise_for_status()
        resp = await http.post("/api/auth/login", json={"email": agent_email, "password": PASSWORD})
        resp.raise_for_status()
        session = resp.json()
        agents.append(
            Agent(session["account"]["id"], session["access_token"], session["refresh_token"])
        )
    return admins, agents


async def post_retrying(
    http: httpx.AsyncClient,
    path: str,
    token: str,
    retries: dict[str, int],
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    """A set-up request, repeated on a 503 (nothing changed) or a transport error
    while the busy machine makes a service slow to answer."""
    for attempt in range(10):
        try:
            resp = await http.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
            if resp.status_code != 503:
                resp.raise_for_status()
                return resp
            what = "HTTP 503"
        except httpx.TransportError as exc:
            what = type(exc).__name__
        retries[what] = retries.get(what, 0) + 1
        await asyncio.sleep(1.0 + attempt)
    raise RuntimeError(f"POST {path} failed 10 times ({retries})")


async def link_devices(
    http: httpx.AsyncClient,
    nc: NatsClient,
    admins: list[str],
    count: int,
    timeout: float,
    retries: dict[str, int],
) -> list[tuple[int, str]]:
    """``count`` devices over the accounts, each connected and its QR scanned by
    the simulated phone: (account index, device id). Set-up requests repeated
    after a 503 or a transport error are counted in ``retries``."""
    gate = asyncio.Semaphore(8)
    devices: list[tuple[int, str]] = []

    async def create(i: int) -> None:
        account = i % len(admins)
        async with gate:
            resp = await post_retrying(
                http, "/api/devices", admins[account], retries, {"name": f"soak {i}"}
            )
            devices.append((account, resp.json()["id"]))

    await asyncio.gather(*(create(i) for i in range(count)))
    wanted = {d for _, d in devices}
    connected: set[str] = set()
    scanned: set[str] = set()
    all_connected = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def scan(device_id: str) -> None:
        phone = f"52{int(uuid.UUID(device_id)) % 10**11:011d}"
        for _ in range(10):
            with contextlib.suppress(Exception):
                reply = await nc.request(
                    f"sim.{device_id}.scan", json.dumps({"phone": phone}).encode(), 10
                )
                if json.loads(reply.data).get("ok"):
                    return
            await asyncio.sleep(0.5)

    async def on_event(msg: Msg) -> None:
        device_id = msg.subject.split(".")[3]
        if device_id not in wanted:
            return
        if msg.subject.endswith(".qr") and device_id not in scanned:
            scanned.add(device_id)
            task = asyncio.create_task(scan(device_id))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif (
            msg.subject.endswith(".status")
            and json.loads(msg.data)["data"]["status"] == "connected"
        ):
            connected.add(device_id)
            if connected >= wanted:
                all_connected.set()

    subs = [
        await nc.subscribe("wa.evt.*.*.qr", cb=on_event),
        await nc.subscribe("wa.evt.*.*.status", cb=on_event),
    ]
    await nc.flush()

    async def connect(account: int, device_id: str) -> None:
        async with gate:
            await post_retrying(http, f"/api/devices/{device_id}/connect", admins[account], retries)

    await asyncio.gather(*(connect(a, d) for a, d in devices))
    try:
        await asyncio.wait_for(all_connected.wait(), timeout)
    except TimeoutError:
        raise RuntimeError(f"only {len(connected)} of {count} devices connected") from None
    for sub in subs:
        await sub.unsubscribe()
    return devices


# ---- traffic ---------------------------------------------------------------------------


@dataclass
class Traffic:
    inbound_attempted: int = 0
    inbound_accepted: set[str] = field(default_factory=set)  # wa_message_id
    inbound_given_up: int = 0
    inbound_retries: int = 0
    outbound_attempted: int = 0
    outbound_accepted: dict[str, str] = field(default_factory=dict)  # body tag → message id
    outbound_given_up: int = 0
    outbound_retries: int = 0
    outbound_rate_limited: int = 0
    phone: dict[str, int] = field(default_factory=dict)  # body tag → arrivals on simphone
    errors: dict[str, int] = field(default_factory=dict)
    pending: set[asyncio.Task[None]] = field(default_factory=set)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def paced(rate: float, until: float, spawn: Any) -> None:
    """Call ``spawn(n)`` ``rate`` times a second until ``until`` (monotonic)."""
    if rate <= 0:
        return
    started = time.monotonic()
    n = 0
    while True:
        due = started + n / rate
        if due >= until:
            return
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        spawn(n)
        n += 1


async def send_inbound(
    nc: NatsClient, traffic: Traffic, device_id: str, contact: str, wa_id: str, deadline_s: float
) -> None:
    """One inbound message; a failure while the device is between workers (no
    responder, not connected, a timeout) is tried again with the same id."""
    payload = json.dumps(
        {
            "from": contact,
            "body": f"Hola, soy {contact} ({wa_id})",
            "push_name": f"Contact {contact[-4:]}",
            "wa_message_id": wa_id,
        }
    ).encode()
    give_up = time.monotonic() + deadline_s
    first = True
    while True:
        if not first:
            traffic.inbound_retries += 1
        first = False
        try:
            reply = json.loads((await nc.request(f"sim.{device_id}.inbound", payload, 5)).data)
            if reply.get("ok"):
                traffic.inbound_accepted.add(wa_id)
                return
            traffic.error(f"inbound: {reply.get('error')}")
        except Exception as exc:
            traffic.error(f"inbound: {type(exc).__name__}")
        if time.monotonic() > give_up:
            traffic.inbound_given_up += 1
            return
        await asyncio.sleep(1.0)


async def send_outbound(
    http: httpx.AsyncClient,
    traffic: Traffic,
    agent: Agent,
    device_id: str,
    contact: str,
    tag: str,
    deadline_s: float,
) -> None:
    """One send by an agent; a 5xx or a timeout is repeated with the same client_id."""
    body = {"device_id": device_id, "to": contact, "body": f"Gracias, {tag}", "client_id": tag}
    give_up = time.monotonic() + deadline_s
    first = True
    while True:
        if not first:
            traffic.outbound_retries += 1
        first = False
        token = agent.access_token
        try:
            resp = await http.post(
                "/api/messages/send", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            if resp.status_code == 202:
                traffic.outbound_accepted[tag] = resp.json()["id"]
                return
            if resp.status_code == 401:
                await agent.refresh(http, token)
                continue
            if resp.status_code == 429:
                traffic.outbound_rate_limited += 1
            traffic.error(f"send: HTTP {resp.status_code}")
            if resp.status_code < 500 and resp.status_code != 429:
                traffic.outbound_given_up += 1
                return
        except httpx.HTTPError as exc:
            traffic.error(f"send: {type(exc).__name__}")
        if time.monotonic() > give_up:
            traffic.outbound_given_up += 1
            return
        await asyncio.sleep(1.0)


async def settle(
    db: asyncpg.Connection, traffic: Traffic, timeout: float, unexpected_like: str
) -> dict[str, Any]:
    """Wait (``timeout`` at most) until every inbound message the simulator accepted
    is stored and every accepted send is on the phone and sent/delivered/read; what
    was lost, duplicated, or stored without having been accepted (``unexpected_like``:
    the ``wa_message_id`` pattern of this traffic)."""
    in_ids = sorted(traffic.inbound_accepted)
    out_ids = [uuid.UUID(m) for m in traffic.outbound_accepted.values()]

    async def check() -> tuple[dict[str, int], dict[str, int]]:
        rows = await db.fetch(
            "SELECT wa_message_id, count(*) AS n FROM messaging.messages"
            " WHERE direction = 'in' AND wa_message_id = ANY($1::text[])"
            " GROUP BY wa_message_id",
            in_ids,
        )
        stored = {r["wa_message_id"]: r["n"] for r in rows}
        rows = await db.fetch(
            "SELECT status, count(*) AS n FROM messaging.messages"
            " WHERE id = ANY($1::uuid[]) GROUP BY status",
            out_ids,
        )
        return stored, {r["status"]: r["n"] for r in rows}

    deadline = time.monotonic() + timeout
    while True:
        stored, statuses = await check()
        done_out = sum(statuses.get(s, 0) for s in ("sent", "delivered", "read"))
        reached = sum(1 for t in traffic.outbound_accepted if traffic.phone.get(t))
        if (
            len(stored) >= len(in_ids) and done_out >= len(out_ids) and reached >= len(out_ids)
        ) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    extra_in = await db.fetchval(
        "SELECT count(*) FROM messaging.messages WHERE direction = 'in'"
        " AND wa_message_id LIKE $1 AND wa_message_id <> ALL($2::text[])",
        unexpected_like,
        in_ids,
    )
    inbound_stored = sum(1 for n in stored.values() if n >= 1)
    inbound_dupes = sum(n - 1 for n in stored.values() if n > 1)
    outbound_delivered = sum(1 for t in traffic.outbound_accepted if traffic.phone.get(t))
    outbound_dupes = sum(
        n - 1 for t, n in traffic.phone.items() if t in traffic.outbound_accepted and n > 1
    )
    outbound_done = sum(statuses.get(s, 0) for s in ("sent", "delivered", "read"))
    lost_in = len(in_ids) - inbound_stored
    lost_out = len(out_ids) - min(outbound_delivered, outbound_done)
    return {
        "inbound_stored": inbound_stored,
        "inbound_duplicates": inbound_dupes,
        "inbound_unexpected": extra_in,
        "outbound_delivered": outbound_delivered,
        "outbound_phone_duplicates": outbound_dupes,
        "outbound_statuses": statuses,
        "lost": lost_in + lost_out,
        "duplicates": inbound_dupes + outbound_dupes,
    }


# ---- slopes ----------------------------------------------------------------------------


def least_squares(points: list[tuple[float, float]]) -> float:
    """The slope of the least-squares line through (x, y)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def line(points: list[tuple[float, float]], args: argparse.Namespace) -> dict[str, Any] | None:
    """The least-squares line through (t s, MB): MB/min, % of the mean per 10 min and
    whether it is over the threshold (over both bounds); None under 3 points."""
    if len(points) < 3:
        return None
    slope = least_squares([(t / 60, y) for t, y in points])  # MB per minute
    mean = sum(y for _, y in points) / len(points)
    pct = slope * 10 / mean * 100
    return {
        "from_s": round(points[0][0], 1),
        "to_s": round(points[-1][0], 1),
        "mean_mb": round(mean, 1),
        "slope_mb_per_min": round(slope, 3),
        "slope_pct_per_10min": round(pct, 2),
        "over": slope > args.max_mb_per_min and pct > args.max_pct_per_10min,
    }


def judge(
    s: Series, warmup_s: float, restart: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """The series' RSS line after its own warm-up. A process that lived through the
    restart also gets a line before it and one after it settled: when only the
    whole line is over the threshold, the rise is the step the restart caused
    (the survivor took over the stopped worker's devices), and it passes."""
    start = max(s.ready_s or s.started_s, 0.0) + warmup_s
    steady = [(t, kib / 1024) for t, kib in s.samples if t >= start]
    mb = [kib / 1024 for t, kib in s.samples if t >= 0]
    primed = [kib / 1024 for t, kib in s.samples if t < 0]
    out: dict[str, Any] = {
        "pid": s.pid,
        "started_s": round(s.started_s, 1),
        "ready_s": round(s.ready_s, 1) if s.ready_s is not None else None,
        "ended_s": round(s.ended_s, 1) if s.ended_s is not None else None,
        "samples": len(s.samples),
        "steady_samples": len(steady),
        "rss_start_mb": round(mb[0], 1) if mb else None,
        "rss_end_mb": round(mb[-1], 1) if mb else None,
        "rss_max_mb": round(max(mb), 1) if mb else None,
        "rss_before_prime_mb": round(primed[0], 1) if primed else None,
        "cpu_s": (
            round(s.cpu_last - s.cpu_start, 1)
            if s.cpu_last is not None and s.cpu_start is not None
            else None
        ),
    }
    whole = line(steady, args)
    if whole is None:
        out.update(slope_mb_per_min=None, slope_pct_per_10min=None, mean_mb=None, windows=None)
        out["pass"] = True
        out["note"] = "fewer than 3 samples after warm-up: not judged"
        return out
    out.update(
        mean_mb=whole["mean_mb"],
        slope_mb_per_min=whole["slope_mb_per_min"],
        slope_pct_per_10min=whole["slope_pct_per_10min"],
        windows=None,
    )
    out["pass"] = not whole["over"]
    at, ready = restart.get("at_s"), restart.get("ready_s")
    if at is not None and ready is not None and s.started_s < at and s.ended_s is None:
        before = line([(t, y) for t, y in steady if t < at], args)
        after = line([(t, y) for t, y in steady if t >= ready + args.settle], args)
        if before is not None and after is not None:
            out["windows"] = {
                "before_restart": before,
                "after_restart": after,
                "step_mb": round(after["mean_mb"] - before["mean_mb"], 1),
            }
            if not out["pass"] and not before["over"] and not after["over"]:
                out["pass"] = True
                out["note"] = "the whole line is over: a step at the restart, flat either side"
    return out


# ---- the run ---------------------------------------------------------------------------


async def soak(
    args: argparse.Namespace,
    system: System,
    nats_url: str,
    database_url: str,
    server_pids: dict[str, int],
) -> dict[str, Any]:
    rnd = random.Random(args.seed)
    for name in SERVICES:  # the devices API before the workers: it migrates their tables
        system.start(name)
        await system.wait_ready(name)
    for i in range(1, args.workers + 1):
        system.start(f"worker{i}")
    for i in range(1, args.workers + 1):
        await system.wait_ready(f"worker{i}")
    for name, pid in server_pids.items():
        system.track(name, pid)
    system.track("soak (load generator)", os.getpid())

    nc = await natsmod.connect(nats_url, name="soak")
    traffic = Traffic()
    timings: dict[str, float] = {}
    restart: dict[str, Any] = {}
    setup_retries: dict[str, int] = {}
    stop_sampling = asyncio.Event()
    load: list[float] = []

    streams: list[tuple[float, dict[str, list[int]]]] = []
    js = nc.jetstream()

    async def sampler() -> None:
        while not stop_sampling.is_set():
            system.sample()
            load.append(load_average())
            with contextlib.suppress(Exception):  # what nats-server holds, beside its RSS
                infos = await js.streams_info()
                streams.append(
                    (
                        system.now(),
                        {
                            i.config.name or "?": [
                                i.state.messages,
                                i.state.bytes,
                                getattr(i.state, "num_deleted", None) or 0,
                                i.state.consumer_count,
                            ]
                            for i in infos
                        },
                    )
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_sampling.wait(), args.interval)

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=system.url("gateway"), timeout=30, limits=limits) as http:
        t0 = time.monotonic()
        try:
            admins, agents = await set_up_accounts(http, args.accounts)
            devices = await link_devices(
                http, nc, admins, args.devices, args.link_timeout, setup_retries
            )
        except Exception as exc:
            raise RuntimeError(
                f"set-up failed ({exc!r}); processes that exited: {system.dead() or 'none'}"
            ) from exc
        timings["link_s"] = round(time.monotonic() - t0, 1)
        contacts = [f"521{rnd.randrange(10**9, 10**10)}" for _ in range(args.contacts)]

        async def on_phone(msg: Msg) -> None:
            body = json.loads(msg.data).get("body") or ""
            tag = body.rsplit(" ", 1)[-1]
            traffic.phone[tag] = traffic.phone.get(tag, 0) + 1

        phone_sub = await nc.subscribe("simphone.*", cb=on_phone, pending_msgs_limit=-1)
        await nc.flush()

        run_tag = uuid.uuid4().hex[:6]

        def spawn(into: Traffic, task: Any) -> None:
            t = asyncio.create_task(task)
            into.pending.add(t)
            t.add_done_callback(into.pending.discard)

        def inbound_to(into: Traffic, kind: str, n: int, device: int | None = None) -> None:
            into.inbound_attempted += 1
            _, device_id = devices[rnd.randrange(len(devices)) if device is None else device]
            wa_id = f"soak-{kind}-{run_tag}-{n:07d}"
            contact = rnd.choice(contacts)
            spawn(into, send_inbound(nc, into, device_id, contact, wa_id, args.retry_for))

        def outbound_to(into: Traffic, kind: str, n: int, device: int | None = None) -> None:
            into.outbound_attempted += 1
            account, device_id = devices[rnd.randrange(len(devices)) if device is None else device]
            tag, agent = f"soak-{kind}-{run_tag}-{n:07d}", agents[account]
            contact = rnd.choice(contacts)
            spawn(into, send_outbound(http, into, agent, device_id, contact, tag, args.retry_for))

        # the steady state before the clock: every device has had a conversation (its
        # chats, its leads, its send queue's consumers exist) and the system has carried
        # a burst of the same traffic, so that what a process keeps once (per device, per
        # stream block) is in place and the slopes measure what it keeps per message
        primed = Traffic(phone=traffic.phone)  # tags differ: one subscription counts both
        prime_report: dict[str, Any] = {"seconds": args.prime, "factor": args.prime_factor}
        sampling: asyncio.Task[None] | None = None
        if args.prime > 0:
            system.clock0 = time.monotonic()
            sampling = asyncio.create_task(sampler())
            t1 = time.monotonic()
            for i in range(len(devices)):
                inbound_to(primed, "prime-in", i, device=i)
                outbound_to(primed, "prime-out", i, device=i)
                await asyncio.sleep(args.prime / 4 / len(devices))
            offset = len(devices)
            burst_until = time.monotonic() + args.prime
            await asyncio.gather(
                paced(
                    args.in_rate * args.prime_factor,
                    burst_until,
                    lambda n: inbound_to(primed, "prime-in", offset + n),
                ),
                paced(
                    args.out_rate * args.prime_factor,
                    burst_until,
                    lambda n: outbound_to(primed, "prime-out", offset + n),
                ),
            )
            if primed.pending:
                await asyncio.wait(set(primed.pending))
            prime_db = await asyncpg.connect(database_url)
            try:
                prime_report.update(
                    await settle(prime_db, primed, args.drain, f"soak-prime-in-{run_tag}-%")
                )
            finally:
                await prime_db.close()
            prime_report["inbound_sent"] = len(primed.inbound_accepted)
            prime_report["outbound_sent"] = len(primed.outbound_accepted)
            prime_report["errors"] = primed.errors
            prime_report["took_s"] = round(time.monotonic() - t1, 1)
            stop_sampling.set()
            await sampling
            stop_sampling.clear()
        timings["prime_s"] = prime_report.get("took_s", 0.0)

        shift = time.monotonic() - system.clock0 if sampling is not None else 0.0
        system.clock0 = time.monotonic()
        for s in system.series:  # the clock starts with the traffic; priming is < 0
            s.samples = [(t - shift, kib) for t, kib in s.samples]
            s.started_s = -1.0
            s.cpu_start = cpu_seconds(s.pid)
        streams[:] = [(t - shift, state) for t, state in streams]
        sampling = asyncio.create_task(sampler())
        until = system.clock0 + args.duration

        def inbound(n: int) -> None:
            inbound_to(traffic, "in", n)

        def outbound(n: int) -> None:
            outbound_to(traffic, "out", n)

        async def restart_worker() -> None:
            await asyncio.sleep(max(0.0, system.clock0 + args.duration / 2 - time.monotonic()))
            sig = signal.SIGKILL if args.kill else signal.SIGTERM
            restart.update(worker="worker1", signal=sig.name, at_s=round(system.now(), 1))
            restart["exit_s"] = round(await system.stop("worker1", sig), 2)
            restart["exit_code"] = system.procs["worker1"].returncode
            await asyncio.sleep(args.down)
            system.start("worker1")
            t = time.monotonic()
            await system.wait_ready("worker1")
            restart["ready_after_s"] = round(time.monotonic() - t, 2)
            system.series[-1].ready_s = system.now()
            restart["ready_s"] = round(system.now(), 1)

        restarting = asyncio.create_task(restart_worker())
        await asyncio.gather(
            paced(args.in_rate, until, inbound),
            paced(args.out_rate, until, outbound),
        )
        traffic_s = system.now()
        timings["traffic_s"] = round(traffic_s, 1)
        await restarting
        if traffic.pending:
            await asyncio.wait(set(traffic.pending))

        # drain: every accepted message stored, every accepted send on the phone and sent
        db = await asyncpg.connect(database_url)
        try:
            drained = await settle(db, traffic, args.drain, f"soak-in-{run_tag}-%")
        finally:
            await db.close()
        timings["drain_s"] = round(system.now() - traffic_s, 1)
        await phone_sub.unsubscribe()
        stop_sampling.set()
        await sampling
        restarting.result()
    await nc.close()

    in_ids, out_ids = traffic.inbound_accepted, traffic.outbound_accepted
    inbound_stored, inbound_dupes = drained["inbound_stored"], drained["inbound_duplicates"]
    outbound_delivered = drained["outbound_delivered"]
    outbound_phone_dupes = drained["outbound_phone_duplicates"]
    statuses_all, extra_in = drained["outbound_statuses"], drained["inbound_unexpected"]
    warmup_s = args.duration * args.warmup
    processes = {s.name: judge(s, warmup_s, restart, args) for s in system.series}
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": os.uname().nodename,
        "cores": os.cpu_count(),
        "duration_s": args.duration,
        "devices": len(devices),
        "accounts": args.accounts,
        "workers": args.workers,
        "in_rate": args.in_rate,
        "out_rate": args.out_rate,
        "inbound_attempted": traffic.inbound_attempted,
        "inbound_sent": len(in_ids),
        "inbound_given_up": traffic.inbound_given_up,
        "inbound_retries": traffic.inbound_retries,
        "inbound_stored": inbound_stored,
        "inbound_duplicates": inbound_dupes,
        "inbound_unexpected": extra_in,
        "inbound_achieved_per_s": round(len(in_ids) / traffic_s, 2),
        "outbound_attempted": traffic.outbound_attempted,
        "outbound_sent": len(out_ids),
        "outbound_given_up": traffic.outbound_given_up,
        "outbound_retries": traffic.outbound_retries,
        "outbound_rate_limited": traffic.outbound_rate_limited,
        "outbound_delivered": outbound_delivered,
        "outbound_phone_duplicates": outbound_phone_dupes,
        "outbound_statuses": statuses_all,
        "outbound_achieved_per_s": round(len(out_ids) / traffic_s, 2),
        "lost": drained["lost"],
        "duplicates": drained["duplicates"],
        "prime": prime_report,
        "errors": traffic.errors,
        "restart": restart,
        "exited": system.dead(),
        "setup_retries": setup_retries,
        "timings": timings,
        "load_average": {
            "min": min(load, default=0.0),
            "mean": round(sum(load) / max(len(load), 1), 2),
            "max": max(load, default=0.0),
        },
        "warmup_s": warmup_s,
        "interval_s": args.interval,
        "threshold": {
            "max_mb_per_min": args.max_mb_per_min,
            "max_pct_per_10min": args.max_pct_per_10min,
            "rule": "a process fails when its slope is above both",
        },
        "processes": processes,
        "streams_end": streams[-1][1] if streams else {},
        "streams": [[round(t, 1), state] for t, state in streams],
        "series": {
            s.name: [[round(t, 1), round(kib / 1024, 2)] for t, kib in s.samples]
            for s in system.series
        },
    }
    result["pass"] = (
        result["lost"] == 0
        and result["duplicates"] == 0
        and prime_report.get("lost", 0) == 0
        and prime_report.get("duplicates", 0) == 0
        and prime_report.get("inbound_unexpected", 0) == 0
        and result["inbound_unexpected"] == 0
        and not result["exited"]
        and all(p["pass"] for p in processes.values())
    )
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = benchenv.isolate()
    log_dir = Path(args.log_dir)
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    for old in await asyncio.to_thread(lambda: list(log_dir.glob("*.log"))):
        old.unlink()
    with private_servers() as (nats_url, redis_url, server_pids):
        async with benchenv.fresh_database(
            with_database(args.pg, "postgres"), args.keep_db
        ) as db_url:
            system = system_for(args, db_url, nats_url, redis_url, workdir)
            try:
                return await soak(args, system, nats_url, db_url, server_pids)
            finally:
                benchenv.stop_processes(system.procs.values())


def prime_line(r: dict[str, Any]) -> str:
    p = r.get("prime") or {}
    if not p.get("took_s"):
        return "No priming (`--prime 0`): the clock started right after linking."
    rss = ", ".join(
        f"{name} {q['rss_before_prime_mb']} → {q['rss_start_mb']} MB"
        for name, q in r["processes"].items()
        if q.get("rss_before_prime_mb") is not None
    )
    return (
        f"Priming before the clock ({p['took_s']} s): every device one inbound message and "
        f"one send, then {p['seconds']:.0f} s at {p['factor']:g} times the rates; "
        f"{p['inbound_sent']:,} inbound and {p['outbound_sent']:,} sends, lost "
        f"{p['lost']}, twice {p['duplicates']}. RSS before → after it: {rss}."
    )


def markdown(r: dict[str, Any]) -> str:
    rs = r["restart"]
    lines = [
        f"Soak {r['date']} on {r['host']} ({r['cores']} cores): {r['duration_s']} s, "
        f"{r['devices']} devices over {r['accounts']} accounts, {r['workers']} workers; "
        f"load average {r['load_average']['min']} to {r['load_average']['max']} "
        f"(mean {r['load_average']['mean']}).",
        "",
        "| traffic | offered /s | achieved /s | sent | stored / on the phone | lost | duplicates |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| inbound (simulator → messaging) | {r['in_rate']} | {r['inbound_achieved_per_s']} "
        f"| {r['inbound_sent']:,} | {r['inbound_stored']:,} "
        f"| {r['inbound_sent'] - r['inbound_stored']} | {r['inbound_duplicates']} |",
        f"| outbound (gateway → phone) | {r['out_rate']} | {r['outbound_achieved_per_s']} "
        f"| {r['outbound_sent']:,} | {r['outbound_delivered']:,} "
        f"| {r['outbound_sent'] - r['outbound_delivered']} | {r['outbound_phone_duplicates']} |",
        "",
        f"Outbound statuses: {r['outbound_statuses']}. Given up: {r['inbound_given_up']} inbound, "
        f"{r['outbound_given_up']} sends; retried {r['inbound_retries']} inbound, "
        f"{r['outbound_retries']} sends. Restart: {rs.get('worker')} {rs.get('signal')} at "
        f"{rs.get('at_s')} s, exited in {rs.get('exit_s')} s (code {rs.get('exit_code')}), "
        f"ready {rs.get('ready_after_s')} s after its start. Linking took "
        f"{r['timings'].get('link_s')} s, the drain {r['timings'].get('drain_s')} s.",
        "",
        prime_line(r),
        "",
        f"RSS every {r['interval_s']} s; slope over the samples after {r['warmup_s']:.0f} s of "
        "each series (the restarted worker: after it is ready again); fail above "
        f"{r['threshold']['max_mb_per_min']} MB/min and "
        f"{r['threshold']['max_pct_per_10min']} % per 10 min.",
        "",
        "| process | samples | RSS start MB | RSS end MB | max MB | CPU s "
        "| slope MB/min | % per 10 min | before / after restart MB/min (step MB) | pass |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, p in r["processes"].items():
        slope = "n/a" if p["slope_mb_per_min"] is None else f"{p['slope_mb_per_min']:+.3f}"
        pct = "n/a" if p["slope_pct_per_10min"] is None else f"{p['slope_pct_per_10min']:+.2f}"
        w = p.get("windows")
        windows = (
            f"{w['before_restart']['slope_mb_per_min']:+.3f} / "
            f"{w['after_restart']['slope_mb_per_min']:+.3f} ({w['step_mb']:+.1f})"
            if w
            else ""
        )
        lines.append(
            f"| {name} | {p['samples']} | {p['rss_start_mb']} | {p['rss_end_mb']} "
            f"| {p['rss_max_mb']} | {p['cpu_s']} | {slope} | {pct} | {windows} "
            f"| {'yes' if p['pass'] else '**no**'} |"
        )
    if r["streams_end"]:
        lines += [
            "",
            "JetStream at the end (what nats-server holds): "
            + ", ".join(
                f"{name} {m:,} msgs {b / 2**20:.1f} MB"
                + (f" ({d:,} deleted)" if d else "")
                + (f", {c[0]:,} consumers" if c and c[0] else "")
                for name, (m, b, d, *c) in sorted(r["streams_end"].items())
            ),
        ]
    if r["exited"]:
        lines += [
            "",
            "**Processes that exited on their own** (exit code): " + json.dumps(r["exited"]),
        ]
    if r["setup_retries"]:
        lines += ["", "Set-up requests repeated: " + json.dumps(r["setup_retries"])]
    if r["errors"]:
        lines += ["", "Errors met on the way (retried): " + json.dumps(r["errors"])]
    lines += ["", f"**{'PASS' if r['pass'] else 'FAIL'}**"]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic")
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--in-rate", type=float, default=20.0, help="inbound messages per second")
    parser.add_argument("--out-rate", type=float, default=5.0, help="sends per second")
    parser.add_argument("--kill", action="store_true", help="SIGKILL the worker, not SIGTERM")
    parser.add_argument("--down", type=float, default=5.0, help="seconds the worker stays down")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument(
        "--prime",
        type=float,
        default=40.0,
        help="seconds of --prime-factor times the traffic before the clock (0: none)",
    )
    parser.add_argument("--prime-factor", type=float, default=10.0)
    parser.add_argument(
        "--warmup", type=float, default=0.2, help="fraction of the run left out of the slopes"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="seconds after the restarted worker is ready before the after-restart line",
    )
    parser.add_argument("--max-mb-per-min", type=float, default=1.0)
    parser.add_argument("--max-pct-per-10min", type=float, default=5.0)
    parser.add_argument(
        "--retry-for", type=float, default=60.0, help="seconds a message or send is retried"
    )
    parser.add_argument("--drain", type=float, default=180.0, help="seconds to wait at the end")
    parser.add_argument("--link-timeout", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--pg", default=benchenv.DEFAULT_POSTGRES, help="a PostgreSQL server")
    parser.add_argument("--log-dir", default="var/soak-logs")
    parser.add_argument("--json-out", default=None, help="write the result as JSON to this file")
    parser.add_argument("--keep-db", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    arguments.log_dir = str(Path(arguments.log_dir).resolve())
    outcome = asyncio.run(main(arguments))
    print(markdown(outcome))
    if arguments.json_out:
        Path(arguments.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(arguments.json_out).write_text(json.dumps(outcome, indent=2) + "\n")
    sys.exit(0 if outcome["pass"] else 1)
