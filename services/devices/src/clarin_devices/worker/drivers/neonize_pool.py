"""The child processes that hold neonize sessions: starting, supervising and
speaking to them (JSON lines, :mod:`.neonize_host`).

* Two kinds of children. *Pairing* children hold one new device each while it
  shows QR codes: whatsmeow's QR loop cannot be stopped (Go's ``Stop`` leaves it
  blocked on a channel that never closes), so ending a pairing ends its
  process, and nothing else lives there. *Shared* children hold up to
  ``sessions_per_child`` linked sessions, resumed from the store.
* Children are started on demand; one that dies or is killed has its sessions
  reported (through ``on_gone``) and is replaced by the next connect. A child
  that dies while holding sessions counts as a restart
  (``clarin_neonize_child_restarts_total``, :attr:`ChildPool.restarts`).
* The watchdog pings every child; one that stops answering, or whose call into
  Go has been running for more than ``call_timeout``, is killed. An upload
  (``send_media``) may run for up to ``transfer_timeout`` while the child's
  I/O keeps moving: a busy call is not a hung one.
* Every connect attempt may leak one store connection until its process exits:
  their sum stays under ``max_store_connections``, a child takes at most
  ``max_attempts_per_child`` attempts and is recycled once it has no session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from prometheus_client import Counter

from clarin_devices.worker.drivers import DriverError
from clarin_devices.worker.drivers.neonize_store import SCHEMA_RE
from clarin_devices.worker.exceptions import AtCapacity, DriverUnavailable, HostTimeout

log = structlog.get_logger(__name__)

HOST_MODULE = "clarin_devices.worker.drivers.neonize_host"
LINE_LIMIT = 4 * 1024 * 1024  # events and replies are small: files never cross the pipe
TRANSFER_PREFIX = "transfer:"  # lane jobs that move files (the host names them)
TRANSFER_PROGRESS_BYTES = 64 * 1024  # I/O a transfer must show per call_timeout

CHILD_RESTARTS = Counter(
    "clarin_neonize_child_restarts_total",
    "neonize host processes that ended (crashed, killed, recycled) while holding sessions",
)

Role = Literal["shared", "pairing"]


@dataclass(frozen=True)
class NeonizeConfig:
    sessions_per_child: int = 25
    # children that each hold one device while it pairs (shows QR codes)
    pairing_children: int = 4
    # connect attempts a child may make in its life: each one leaks a DB pool
    max_attempts_per_child: int = 50
    # store connections held by all children together (live sessions + leaked
    # pools); a connect waits for room, then fails with code ``capacity``
    max_store_connections: int = 90
    store_schema: str = "devices_wa"
    # a call into Go running longer than this gets its child killed
    call_timeout: float = 25.0
    # an upload may run this long while its I/O moves
    transfer_timeout: float = 600.0
    # a connect holds its child's lane until its first event or failure, or this
    settle_timeout: float = 8.0
    # no QR and no connection this long after a connect → ``disconnected``
    connect_timeout: float = 90.0
    # a stored session resumed only to unlink it has this long to come up
    unlink_timeout: float = 20.0
    # a pairing with no new QR code this long after the last one's expiry has
    # ended (whatsmeow says so only in a log line)
    qr_grace: float = 10.0
    start_timeout: float = 60.0
    ping_interval: float = 1.0
    unresponsive_timeout: float = 20.0
    capacity_wait_timeout: float = 60.0
    proxy: str | None = None  # e.g. socks5://host:1080 (for WhatsApp traffic)
    os_name: str = "Clarin"  # what the phone lists under "Linked devices"
    log_level: str = "INFO"
    neonize_log_level: str = "WARNING"
    # inbound media, fetched by the worker (see neonize_media.py)
    media_max_bytes: int = 64 * 1024 * 1024
    media_download_timeout: float = 120.0
    media_host: str = "https://mmg.whatsapp.net"
    media_via_proxy: bool = True  # files come through ``proxy`` too, as whatsmeow's do
    # say "online" once connected: WhatsApp sends typing only to an online
    # client (the phone then holds back its own notifications)
    mark_online: bool = True
    # history sync after linking: messages this many days back are imported,
    # in batches of ``history_batch`` messages; the import is over once no
    # blob came for ``history_quiet`` seconds
    history_days: float = 30.0
    history_batch: int = 500
    history_quiet: float = 20.0
    # the command that starts a child (tests run a host with extra operations)
    host_command: tuple[str, ...] = field(
        default_factory=lambda: (sys.executable, "-m", HOST_MODULE)
    )

    def __post_init__(self) -> None:
        if not SCHEMA_RE.match(self.store_schema):
            raise ValueError(f"invalid store schema name {self.store_schema!r}")
        if self.settle_timeout >= self.call_timeout:
            raise ValueError("settle_timeout must be below call_timeout")
        if self.sessions_per_child < 1 or self.max_attempts_per_child < self.sessions_per_child:
            raise ValueError("max_attempts_per_child must be at least sessions_per_child")
        if self.max_store_connections <= self.max_attempts_per_child:
            raise ValueError("max_store_connections must exceed max_attempts_per_child")
        if self.pairing_children < 1:
            raise ValueError("pairing_children must be at least 1")


class HostGone(DriverError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="driver_crashed")


@dataclass(eq=False)
class Child:
    number: int
    role: Role
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    pending: dict[int, tuple[str, asyncio.Future[Any]]] = field(default_factory=dict)
    sessions: dict[str, Any] = field(default_factory=dict)  # by sid, kept by the driver
    attempts: int = 0  # store connections it may hold (one per connect attempt)
    next_id: int = 0
    retiring: bool = False
    gone: bool = False
    kill_reason: str | None = None
    crash_line: str | None = None
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    spawned: asyncio.Event = field(default_factory=asyncio.Event)  # proc is set, or never will be
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    io_seen: int = 0  # bytes read + written by the process at the last look
    io_moved_at: float = field(default_factory=time.monotonic)
    healthy_at: float = 0.0  # when the watchdog last found it answering and not hung

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def usable(self) -> bool:
        return not (self.retiring or self.gone)


OnEvent = Callable[[Child, dict[str, Any]], None]
OnGone = Callable[[Child, str], int]  # → how many live sessions it cost


class ChildPool:
    def __init__(self, config: NeonizeConfig, dsn: str, on_event: OnEvent, on_gone: OnGone):
        self.config = config
        self.dsn = dsn
        self.on_event = on_event
        self.on_gone = on_gone
        self.children: list[Child] = []
        self.capacity = asyncio.Condition()
        self.restarts = 0
        self.stopping = False
        self._numbers = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- observability ---------------------------------------------------------------

    def child_pids(self, role: Role | None = None) -> list[int]:
        return [
            c.pid
            for c in self.children
            if c.pid is not None and not c.gone and (role is None or c.role == role)
        ]

    def store_connections_reserved(self) -> int:
        return sum(c.attempts for c in self.children)

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """A first shared child, which loads neonize and creates the whatsmeow
        tables: a broken install fails here, not at the first connect."""
        async with self.capacity:
            child = self._spawn("shared")
            child.attempts += 1
        await self.wait_ready(child)
        await self.request(child, "init_store", timeout=self.config.call_timeout * 2)

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*(self.shutdown(c) for c in list(self.children)))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    def task(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- allocation ------------------------------------------------------------------------

    async def allocate(self, role: Role) -> Child:
        """A child with room for one more session of ``role`` (its attempt counted)."""
        cfg = self.config
        deadline = time.monotonic() + cfg.capacity_wait_timeout
        async with self.capacity:
            while True:
                if self.stopping:
                    raise DriverUnavailable("The driver is stopping")
                held = self.store_connections_reserved()
                if held < cfg.max_store_connections:
                    child = self._room(role, held)
                    if child is not None:
                        child.attempts += 1
                        return child
                self._reclaim()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    what = "pairing" if role == "pairing" else "starting"
                    raise AtCapacity(f"Too many WhatsApp sessions are {what} at once; try again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.capacity.wait(), timeout=min(remaining, 1.0))

    def _room(self, role: Role, held: int) -> Child | None:
        cfg = self.config
        per_child = cfg.sessions_per_child if role == "shared" else 1
        candidates = [
            c
            for c in self.children
            if c.role == role
            and c.usable
            and len(c.sessions) < per_child
            and c.attempts < cfg.max_attempts_per_child
            and (role == "shared" or not self.busy(c))
        ]
        # fill the fullest child first: fewer processes, less memory
        child = max(candidates, key=lambda c: len(c.sessions), default=None)
        if child is not None:
            return child
        if role == "pairing":
            live = [c for c in self.children if c.role == "pairing" and not c.gone]
            if len(live) >= cfg.pairing_children:
                return None
        if held + cfg.max_attempts_per_child <= cfg.max_store_connections:
            return self._spawn(role)
        return None

    def _reclaim(self) -> None:
        """Give back store connections: retire children that hold leaked pools and
        no session; failing that, recycle the most wasteful one."""
        for child in list(self.children):
            if child.usable and not child.sessions and not self.busy(child):
                self.retire(child)
        if any(c.retiring and not c.gone for c in self.children):
            return  # room is on its way
        if any(self.busy(c) for c in self.children):
            return  # attempts under way end by themselves and free their child
        # Only established sessions are left: recycle the shared child that
        # wastes the most (its sessions are reported and reconnect elsewhere).
        wasteful = [
            c
            for c in self.children
            if c.usable
            and c.role == "shared"
            and all(getattr(s, "established", True) for s in c.sessions.values())
            and c.attempts - len(c.sessions) >= max(1, self.config.sessions_per_child // 2)
        ]
        if wasteful:
            victim = max(wasteful, key=lambda c: c.attempts - len(c.sessions))
            victim.retiring = True
            self.kill(victim, "was recycled to release leaked database connections")

    @staticmethod
    def busy(child: Child) -> bool:
        return any(op != "ping" and not f.done() for op, f in child.pending.values())

    def maybe_retire(self, child: Child) -> None:
        """Recycle a child with no session once its attempts (each may hold a
        leaked pool) add up; a child with few keeps serving."""
        if not child.usable or child.sessions or self.busy(child):
            return
        threshold = max(1, self.config.sessions_per_child // 2)
        if child.role == "pairing":
            threshold = self.config.max_attempts_per_child
        if child.attempts >= min(threshold, self.config.max_attempts_per_child):
            self.retire(child)

    def retire(self, child: Child) -> None:
        if child.retiring:
            return
        child.retiring = True
        log.info("neonize_host_retired", pid=child.pid, role=child.role, attempts=child.attempts)
        self.task(self.shutdown(child))

    async def notify(self) -> None:
        async with self.capacity:
            self.capacity.notify_all()

    # ---- processes -------------------------------------------------------------------------

    def _spawn(self, role: Role) -> Child:
        self._numbers += 1
        child = Child(number=self._numbers, role=role)
        self.children.append(child)
        self.task(self._run(child))
        return child

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "CLARIN_NEONIZE_STORE": self.dsn,
                "CLARIN_NEONIZE_SETTLE_TIMEOUT": str(self.config.settle_timeout),
                "CLARIN_NEONIZE_OS_NAME": self.config.os_name,
                "CLARIN_LOG_LEVEL": self.config.log_level,
                "CLARIN_NEONIZE_LOG_LEVEL": self.config.neonize_log_level,
                "CLARIN_NEONIZE_MARK_ONLINE": "1" if self.config.mark_online else "0",
                "CLARIN_NEONIZE_HISTORY_DAYS": str(self.config.history_days),
                "CLARIN_NEONIZE_HISTORY_BATCH": str(self.config.history_batch),
                "CLARIN_NEONIZE_HISTORY_QUIET": str(self.config.history_quiet),
            }
        )
        if self.config.proxy:
            env["CLARIN_NEONIZE_PROXY"] = self.config.proxy
        else:
            env.pop("CLARIN_NEONIZE_PROXY", None)
        return env

    async def _run(self, child: Child) -> None:
        returncode: int | None = None
        try:
            try:
                command = self.config.host_command
                child.proc = await asyncio.create_subprocess_exec(
                    command[0],
                    *command[1:],
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=self._env(),
                    limit=LINE_LIMIT,
                )
            except OSError as exc:
                child.kill_reason = f"could not start: {exc}"
                return
            finally:
                child.spawned.set()
            log.info("neonize_host_started", child=child.number, role=child.role, pid=child.pid)
            if self.stopping:
                self.kill(child, "was not needed any more: the driver is stopping")
            stderr = self.task(self._read_stderr(child))
            watchdog = self.task(self._watchdog(child))
            try:
                await self._read_stdout(child)
                returncode = await child.proc.wait()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stderr, timeout=2)
            finally:
                watchdog.cancel()
        except Exception:
            log.exception("neonize_host_supervision_failed", pid=child.pid)
            if child.proc is not None and child.proc.returncode is None:
                self.kill(child, "lost its supervisor")
                returncode = await child.proc.wait()
        finally:
            await self._gone(child, returncode)

    async def _read_stdout(self, child: Child) -> None:
        assert child.proc is not None and child.proc.stdout is not None
        stream = child.proc.stdout
        while True:
            try:
                line = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):
                log.error("neonize_host_line_too_long", pid=child.pid)
                self.kill(child, "sent an unreadable reply")
                continue
            if not line:
                return
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("neonize_host_garbage", pid=child.pid, line=line[:200])
                continue
            self._on_message(child, message)

    async def _read_stderr(self, child: Child) -> None:
        assert child.proc is not None and child.proc.stderr is not None
        stream = child.proc.stderr
        while True:
            try:
                raw = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            record = _json_object(line)
            if record is not None:
                level = str(record.pop("level", "info")).lower()
                event = str(record.pop("event", "neonize_host_log"))
                extra = {
                    f"host_{k}": v
                    for k, v in record.items()
                    if k not in ("timestamp", "service", "logger", "pid")
                }
                method = getattr(log, level if level in ("debug", "warning", "error") else "info")
                with contextlib.suppress(Exception):
                    method(event, pid=child.pid, **extra)
                continue
            child.stderr_tail.append(line)
            if line.startswith(("fatal error:", "panic:", "SIGSEGV", "SIGABRT")):
                child.crash_line = child.crash_line or line
                log.error("neonize_host_crash", pid=child.pid, line=line)
            else:
                log.debug("neonize_host_output", pid=child.pid, line=line[:500])

    async def _watchdog(self, child: Child) -> None:
        cfg = self.config
        try:
            await asyncio.wait_for(asyncio.shield(child.ready), timeout=cfg.start_timeout)
        except TimeoutError:
            self.kill(child, f"did not start within {cfg.start_timeout:g} s")
            return
        except Exception:
            return  # it is gone already
        while not child.gone:
            await asyncio.sleep(cfg.ping_interval)
            try:
                pong = await self.request(child, "ping", timeout=cfg.unresponsive_timeout)
            except HostGone:
                return
            except DriverError:
                self.kill(child, f"stopped answering for {cfg.unresponsive_timeout:g} s")
                return
            busy = pong.get("busy_for")
            job = str(pong.get("job") or "a call")
            if busy is not None and self._hung(child, job, float(busy)):
                self.kill(child, f"was killed: {job} hung for more than {cfg.call_timeout:g} s")
                return
            child.healthy_at = time.monotonic()

    def _hung(self, child: Child, job: str, busy_for: float) -> bool:
        """A call into Go past ``call_timeout`` is hung, unless it is a transfer
        whose process still moves bytes (up to ``transfer_timeout``)."""
        cfg = self.config
        now = time.monotonic()
        moved = _io_bytes(child.pid)
        if moved - child.io_seen >= TRANSFER_PROGRESS_BYTES:
            child.io_seen, child.io_moved_at = moved, now
        if busy_for <= cfg.call_timeout:
            return False
        if job.startswith(TRANSFER_PREFIX) and busy_for <= cfg.transfer_timeout:
            return now - child.io_moved_at > cfg.call_timeout
        return True

    def kill(self, child: Child, reason: str) -> None:
        if child.proc is None or child.proc.returncode is not None:
            return
        child.kill_reason = child.kill_reason or reason
        log.warning("neonize_host_killed", pid=child.pid, role=child.role, reason=reason)
        with contextlib.suppress(ProcessLookupError):
            child.proc.kill()

    async def shutdown(self, child: Child, grace: float = 3.0) -> None:
        """Ask a child to exit (its sessions end with it); kill it after ``grace``."""
        child.retiring = True
        await child.spawned.wait()  # it may still be being started
        if child.proc is not None and child.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self._write(child, {"op": "shutdown"})
            try:
                await asyncio.wait_for(child.exited.wait(), timeout=grace)
            except TimeoutError:
                self.kill(child, "did not exit when asked")
        await child.exited.wait()

    async def _gone(self, child: Child, returncode: int | None) -> None:
        child.gone = True
        if returncode is not None and returncode < 0:
            cause = f"was killed by signal {-returncode}"
        else:
            cause = f"exited with code {returncode}"
        if child.kill_reason:
            cause = child.kill_reason
        elif child.crash_line:
            cause = f"crashed: {child.crash_line}"
        message = f"The WhatsApp session host (pid {child.pid}) {cause}"
        if not child.ready.done():
            child.ready.set_exception(HostGone(message))
            child.ready.exception()  # retrieved: nobody may be waiting
        for _, future in child.pending.values():
            if not future.done():
                future.set_exception(HostGone(message))
        child.pending.clear()
        lost = self.on_gone(child, message)
        if lost:
            self.restarts += 1
            CHILD_RESTARTS.inc()
            log.warning(
                "neonize_host_restart", pid=child.pid, role=child.role, cause=cause, sessions=lost
            )
        with contextlib.suppress(ValueError):
            self.children.remove(child)
        child.exited.set()
        await self.notify()

    async def wait_ready(self, child: Child) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(child.ready), timeout=self.config.start_timeout)
        except TimeoutError as exc:
            raise DriverUnavailable("The WhatsApp session host did not start") from exc

    # ---- protocol ------------------------------------------------------------------

    async def _write(self, child: Child, payload: dict[str, Any]) -> None:
        if child.proc is None or child.proc.stdin is None or child.gone:
            raise HostGone("The WhatsApp session host is gone")
        data = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
        async with child.write_lock:
            try:
                child.proc.stdin.write(data)
                await child.proc.stdin.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise HostGone(f"The WhatsApp session host is gone: {exc}") from exc

    async def request(
        self, child: Child, op: str, *, timeout: float | None, **args: Any
    ) -> dict[str, Any]:
        if child.gone:
            raise HostGone("The WhatsApp session host is gone")
        child.next_id += 1
        rid = child.next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        child.pending[rid] = (op, future)
        try:
            await self._write(child, {"id": rid, "op": op, **args})
            if timeout is None:
                result = await asyncio.shield(future)
            else:
                result = await asyncio.wait_for(asyncio.shield(future), timeout=timeout)
        except TimeoutError as exc:
            raise HostTimeout(f"The WhatsApp session host did not answer ({op})") from exc
        finally:
            child.pending.pop(rid, None)
        return result if isinstance(result, dict) else {}

    def _on_message(self, child: Child, message: dict[str, Any]) -> None:
        if "id" in message and "ev" not in message:
            entry = child.pending.get(int(message["id"]))
            if entry is None or entry[1].done():
                return
            if message.get("ok"):
                entry[1].set_result(message.get("result"))
            else:
                entry[1].set_exception(
                    DriverError(
                        str(message.get("error")), str(message.get("code") or "driver_error")
                    )
                )
            if entry[0] != "ping":
                self.maybe_retire(child)
            return
        if message.get("ev") == "ready":
            if not child.ready.done():
                child.ready.set_result(None)
            return
        self.on_event(child, message)


def _io_bytes(pid: int | None) -> int:
    """Bytes the process read and wrote so far (sockets included)."""
    if pid is None:
        return 0
    total = 0
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("rchar", "wchar"):
                    total += int(value)
    except (OSError, ValueError):
        return 0
    return total


def _json_object(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
