"""The ``neonize`` driver: WhatsApp through whatsmeow (Go) by way of neonize 0.5.2.

neonize can abort the whole process (unsynchronised Go maps), hang in
``connect``/``stop``, and leaks a PostgreSQL pool per connect attempt (all three
seen with 0.5.2). So this driver never loads it in the worker: sessions
live in child processes (:mod:`.neonize_host`), ``sessions_per_child`` each,
spoken to over pipes with JSON lines. The driver

* starts children on demand and replaces the ones that die — their sessions are
  reported ``disconnected`` with the cause, and the worker reconnects them (in a
  new child) with its own backoff;
* pings every child; one whose call into Go has been running for more than
  ``call_timeout`` (or that stops answering) is killed, same reporting;
* counts the store connections each child may hold (one per connect attempt,
  freed only when the process exits) and keeps their sum under
  ``max_store_connections``: a child takes at most ``max_attempts_per_child``
  attempts and is recycled once it has no session left;
* checks that a session's JID is in the store before a child uses it (a missing
  one aborts the process in Go), reading the ``whatsmeow_device`` table itself:
  ``ClientFactory.get_all_devices_from_db`` would leak one more pool per check.

The sessions are stored by whatsmeow in the devices database, schema
``store_schema`` (``devices_wa``), through lib/pq's ``search_path`` parameter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import structlog

from clarin_common.contract import DeviceStatus, MessageType
from clarin_common.events import WaMessage, WaReceipt
from clarin_common.ids import normalize_jid
from clarin_devices.worker.drivers import (
    DriverError,
    DriverEvents,
    InboundMedia,
    NotConnected,
    SendResult,
    WhatsAppDriver,
)
from clarin_devices.worker.drivers.neonize_host import HOOKS_ENV

log = structlog.get_logger(__name__)

HOST_MODULE = "clarin_devices.worker.drivers.neonize_host"
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TERMINAL: set[str] = {"disconnected", "logged_out", "error"}
_LINE_LIMIT = 256 * 1024 * 1024  # a media message travels as one base64 line


@dataclass(frozen=True)
class NeonizeConfig:
    sessions_per_child: int = 25
    # connect attempts a child may make in its life: each one leaks a DB pool
    max_attempts_per_child: int = 50
    # store connections held by all children together (live sessions + leaked
    # pools); a connect waits for room, then fails with code ``capacity``
    max_store_connections: int = 90
    store_schema: str = "devices_wa"
    # a call into Go running longer than this gets its child killed
    call_timeout: float = 25.0
    # a connect holds its child's lane until its first event or failure, or this
    settle_timeout: float = 8.0
    # no QR and no connection this long after a connect → ``disconnected``
    connect_timeout: float = 90.0
    start_timeout: float = 60.0
    ping_interval: float = 1.0
    unresponsive_timeout: float = 20.0
    capacity_wait_timeout: float = 60.0
    proxy: str | None = None  # e.g. socks5://host:1080 (for WhatsApp traffic)
    os_name: str = "Clarin"  # what the phone lists under "Linked devices"
    log_level: str = "INFO"
    neonize_log_level: str = "WARNING"
    python: str = field(default_factory=lambda: sys.executable)
    test_hooks: bool = False

    def __post_init__(self) -> None:
        if not _SCHEMA_RE.match(self.store_schema):
            raise ValueError(f"invalid store schema name {self.store_schema!r}")
        if self.settle_timeout >= self.call_timeout:
            raise ValueError("settle_timeout must be below call_timeout")
        if self.sessions_per_child < 1 or self.max_attempts_per_child < self.sessions_per_child:
            raise ValueError("max_attempts_per_child must be at least sessions_per_child")
        if self.max_store_connections <= self.max_attempts_per_child:
            raise ValueError("max_store_connections must exceed max_attempts_per_child")


def store_dsn(database_url: str, schema: str) -> str:
    """The DSN neonize opens (lib/pq): ``postgres://``, our schema as search_path."""
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("sslmode", "disable")
    query["search_path"] = schema
    return urlunsplit(("postgres", parts.netloc, parts.path, urlencode(query), ""))


class HostGone(DriverError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="driver_crashed")


@dataclass(eq=False)
class _Session:
    sid: str
    device_id: str
    events: DriverEvents
    child: _Child
    jid: str | None
    started_at: float = field(default_factory=time.monotonic)
    state: str = "connecting"  # connecting | qr_pending | connected | ended
    established: bool = False  # the child accepted the connect
    closing: bool = False


@dataclass(eq=False)
class _Child:
    number: int
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    pending: dict[int, tuple[str, asyncio.Future[Any]]] = field(default_factory=dict)
    sessions: dict[str, _Session] = field(default_factory=dict)  # by sid
    attempts: int = 0  # store connections it may hold (one per connect attempt)
    next_id: int = 0
    retiring: bool = False
    gone: bool = False
    kill_reason: str | None = None
    crash_line: str | None = None
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    spawned: asyncio.Event = field(default_factory=asyncio.Event)  # proc is set, or never will be
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def usable(self) -> bool:
        return not (self.retiring or self.gone)


class NeonizeDriver(WhatsAppDriver):
    name = "neonize"

    def __init__(self, database_url: str, config: NeonizeConfig | None = None) -> None:
        self.database_url = database_url
        self.config = config or NeonizeConfig()
        self.dsn = store_dsn(database_url, self.config.store_schema)
        self._children: list[_Child] = []
        self._sessions: dict[str, _Session] = {}  # by device id
        self._by_sid: dict[str, _Session] = {}
        self._capacity = asyncio.Condition()
        self._numbers = 0
        self._queues: dict[str, deque[Callable[[], Awaitable[None]]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._db: asyncpg.Connection | None = None
        self._db_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._started = False
        self._stopping = False

    # ---- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Create the store schema and start a first child, which loads neonize and
        creates the whatsmeow tables: a broken install fails here, not at the
        first connect."""
        async with self._start_lock:
            if self._started:
                return
            schema = self.config.store_schema
            async with self._db_lock:
                conn = await self._conn()
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            async with self._capacity:
                child = self._spawn()
                child.attempts += 1
            await self._wait_ready(child)
            await self._request(child, "init_store", timeout=self.config.call_timeout * 2)
            self._started = True

    async def stop(self) -> None:
        self._stopping = True
        for session in list(self._sessions.values()):
            session.closing = True
        await asyncio.gather(*(self._shutdown(c) for c in list(self._children)))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        async with self._db_lock:
            if self._db is not None:
                with contextlib.suppress(Exception):
                    await self._db.close()
                self._db = None

    # ---- the WhatsAppDriver interface ------------------------------------------

    async def connect(self, device_id: str, session_jid: str | None, events: DriverEvents) -> None:
        if self._stopping:
            raise DriverError("The driver is stopping", code="driver_unavailable")
        await self.start()
        if device_id in self._sessions:
            await self.disconnect(device_id)
        jid: str | None = None
        if session_jid:
            jid = await self._stored_jid(session_jid)
            if jid is None:
                raise DriverError(
                    f"No stored WhatsApp session for {session_jid}: pair the device again",
                    code="session_not_found",
                )
            for other in self._sessions.values():
                if other.jid and normalize_jid(other.jid) == normalize_jid(jid):
                    raise DriverError(
                        f"The session of {session_jid} is in use by device {other.device_id}",
                        code="session_in_use",
                    )
        child = await self._allocate()
        session = _Session(
            sid=uuid.uuid4().hex, device_id=device_id, events=events, child=child, jid=jid
        )
        self._sessions[device_id] = session
        self._by_sid[session.sid] = session
        child.sessions[session.sid] = session
        try:
            await self._wait_ready(child)
            await self._request(
                child,
                "connect",
                sid=session.sid,
                device_id=device_id,
                jid=jid,
                timeout=None,  # bounded by the watchdog: the lane must progress
            )
        except asyncio.CancelledError:
            # the child may be starting the session: take it down behind it
            session.closing = True
            self._task(self._abandon(session))
            raise
        except BaseException:
            self._forget(session)
            raise
        session.established = True
        self._maybe_retire(child)

    async def _abandon(self, session: _Session) -> None:
        try:
            await self._request(session.child, "disconnect", sid=session.sid, timeout=None)
        except DriverError:
            pass
        finally:
            self._forget(session)

    async def disconnect(self, device_id: str) -> None:
        session = self._sessions.get(device_id)
        if session is None:
            return
        session.closing = True
        try:
            await self._request(session.child, "disconnect", sid=session.sid, timeout=None)
        except HostGone:
            pass  # the process is gone, and the session with it
        finally:
            self._forget(session)

    async def logout(self, device_id: str) -> None:
        session = self._sessions.get(device_id)
        if session is None:
            return
        session.closing = True
        try:
            await self._request(session.child, "logout", sid=session.sid, timeout=None)
        except HostGone:
            pass
        finally:
            self._forget(session)
        if session.jid:
            await self._delete_stored(session.jid)

    def is_connected(self, device_id: str) -> bool:
        session = self._sessions.get(device_id)
        return session is not None and session.state == "connected" and not session.closing

    async def send_text(self, device_id: str, to_jid: str, body: str) -> SendResult:
        session = self._connected(device_id)
        result = await self._command(session, "send_text", to=to_jid, body=body)
        return _send_result(result)

    async def send_media(
        self,
        device_id: str,
        to_jid: str,
        media_type: MessageType,
        data: bytes,
        mime_type: str,
        file_name: str | None,
        caption: str | None,
    ) -> SendResult:
        session = self._connected(device_id)
        if not data:
            raise DriverError("The media file is empty", code="invalid_media")
        if media_type not in ("image", "video", "audio", "document"):
            raise DriverError(
                f"Sending {media_type} messages is not supported", "unsupported_media"
            )
        result = await self._command(
            session,
            "send_media",
            to=to_jid,
            media_type=media_type,
            data=base64.b64encode(data).decode(),
            mime_type=mime_type,
            file_name=file_name,
            caption=caption,
        )
        return _send_result(result)

    async def mark_read(
        self, device_id: str, chat_jid: str, sender_jid: str | None, wa_message_ids: list[str]
    ) -> None:
        session = self._connected(device_id)
        if wa_message_ids:
            await self._command(
                session, "mark_read", chat=chat_jid, sender=sender_jid, ids=wa_message_ids
            )

    async def pair_phone(self, device_id: str, phone: str) -> str:
        session = self._sessions.get(device_id)
        if session is None or session.closing or session.state == "ended":
            raise NotConnected()
        digits = "".join(c for c in phone if c.isdigit())
        if not 7 <= len(digits) <= 15:
            raise DriverError("phone must have 7 to 15 digits", code="invalid_phone")
        result = await self._command(session, "pair_phone", phone=digits)
        return str(result["code"])

    # ---- observability (tests, bench, /metrics) ----------------------------------

    def child_pids(self) -> list[int]:
        return [c.pid for c in self._children if c.pid is not None and not c.gone]

    def session_pid(self, device_id: str) -> int | None:
        session = self._sessions.get(device_id)
        return session.child.pid if session is not None else None

    def store_connections_reserved(self) -> int:
        return sum(c.attempts for c in self._children)

    # ---- children ----------------------------------------------------------------

    def _spawn(self) -> _Child:
        self._numbers += 1
        child = _Child(number=self._numbers)
        self._children.append(child)
        child.tasks.append(self._task(self._run_child(child)))
        return child

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "CLARIN_NEONIZE_STORE": self.dsn,
                "CLARIN_NEONIZE_SETTLE_TIMEOUT": str(self.config.settle_timeout),
                "CLARIN_NEONIZE_OS_NAME": self.config.os_name,
                "CLARIN_LOG_LEVEL": self.config.log_level,
                "CLARIN_NEONIZE_LOG_LEVEL": self.config.neonize_log_level,
                HOOKS_ENV: "1" if self.config.test_hooks else "0",
            }
        )
        if self.config.proxy:
            env["CLARIN_NEONIZE_PROXY"] = self.config.proxy
        else:
            env.pop("CLARIN_NEONIZE_PROXY", None)
        return env

    async def _run_child(self, child: _Child) -> None:
        returncode: int | None = None
        try:
            try:
                child.proc = await asyncio.create_subprocess_exec(
                    self.config.python,
                    "-m",
                    HOST_MODULE,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=self._child_env(),
                    limit=_LINE_LIMIT,
                )
            except OSError as exc:
                child.kill_reason = f"could not start: {exc}"
                return
            finally:
                child.spawned.set()
            log.info("neonize_host_started", child=child.number, pid=child.pid)
            if self._stopping:
                self._kill(child, "was not needed any more: the driver is stopping")
            stderr = self._task(self._read_stderr(child))
            watchdog = self._task(self._watchdog(child))
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
                self._kill(child, "lost its supervisor")
                returncode = await child.proc.wait()
        finally:
            await self._child_gone(child, returncode)

    async def _read_stdout(self, child: _Child) -> None:
        assert child.proc is not None and child.proc.stdout is not None
        stream = child.proc.stdout
        while True:
            try:
                line = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):
                log.error("neonize_host_line_too_long", pid=child.pid)
                self._kill(child, "sent an unreadable reply")
                continue
            if not line:
                return
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("neonize_host_garbage", pid=child.pid, line=line[:200])
                continue
            self._on_child_message(child, message)

    async def _read_stderr(self, child: _Child) -> None:
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

    async def _watchdog(self, child: _Child) -> None:
        cfg = self.config
        try:
            await asyncio.wait_for(asyncio.shield(child.ready), timeout=cfg.start_timeout)
        except TimeoutError:
            self._kill(child, f"did not start within {cfg.start_timeout:g} s")
            return
        except Exception:
            return  # it is gone already
        while not child.gone:
            await asyncio.sleep(cfg.ping_interval)
            try:
                pong = await self._request(child, "ping", timeout=cfg.unresponsive_timeout)
            except HostGone:
                return
            except DriverError:
                self._kill(child, f"stopped answering for {cfg.unresponsive_timeout:g} s")
                return
            busy = pong.get("busy_for")
            if busy is not None and busy > cfg.call_timeout:
                job = pong.get("job") or "a call"
                self._kill(child, f"was killed: {job} hung for more than {cfg.call_timeout:g} s")
                return
            self._expire_stuck_connects(child)

    def _expire_stuck_connects(self, child: _Child) -> None:
        now = time.monotonic()
        for session in list(child.sessions.values()):
            if (
                session.established
                and session.state == "connecting"
                and not session.closing
                and now - session.started_at > self.config.connect_timeout
            ):
                session.state = "ended"
                self._deliver_status(
                    session,
                    "disconnected",
                    {"error": f"WhatsApp did not answer within {self.config.connect_timeout:g} s"},
                )
                self._task(self.disconnect(session.device_id))

    def _kill(self, child: _Child, reason: str) -> None:
        if child.proc is None or child.proc.returncode is not None:
            return
        child.kill_reason = child.kill_reason or reason
        log.warning("neonize_host_killed", pid=child.pid, reason=reason)
        with contextlib.suppress(ProcessLookupError):
            child.proc.kill()

    async def _shutdown(self, child: _Child) -> None:
        child.retiring = True
        await child.spawned.wait()  # it may still be being started
        if child.proc is not None and child.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self._write(child, {"op": "shutdown"})
            try:
                await asyncio.wait_for(child.exited.wait(), timeout=3)
            except TimeoutError:
                self._kill(child, "did not exit when asked")
        await child.exited.wait()

    async def _child_gone(self, child: _Child, returncode: int | None) -> None:
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
        if not child.retiring or child.sessions:
            log.warning(
                "neonize_host_gone", pid=child.pid, cause=cause, sessions=len(child.sessions)
            )
        if not child.ready.done():
            child.ready.set_exception(HostGone(message))
            child.ready.exception()  # retrieved: nobody may be waiting
        for _, future in child.pending.values():
            if not future.done():
                future.set_exception(HostGone(message))
        child.pending.clear()
        for session in list(child.sessions.values()):
            if session.established and not session.closing and session.state != "ended":
                session.state = "ended"
                self._deliver_status(session, "disconnected", {"error": message})
            if session.established:
                self._forget(session)
        with contextlib.suppress(ValueError):
            self._children.remove(child)
        child.exited.set()
        async with self._capacity:
            self._capacity.notify_all()

    async def _wait_ready(self, child: _Child) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(child.ready), timeout=self.config.start_timeout)
        except TimeoutError as exc:
            raise DriverError(
                "The WhatsApp session host did not start", "driver_unavailable"
            ) from exc

    async def _allocate(self) -> _Child:
        cfg = self.config
        deadline = time.monotonic() + cfg.capacity_wait_timeout
        async with self._capacity:
            while True:
                if self._stopping:
                    raise DriverError("The driver is stopping", code="driver_unavailable")
                held = self.store_connections_reserved()
                if held < cfg.max_store_connections:
                    candidates = [
                        c
                        for c in self._children
                        if c.usable
                        and len(c.sessions) < cfg.sessions_per_child
                        and c.attempts < cfg.max_attempts_per_child
                    ]
                    # fill the fullest child first: fewer processes, less memory
                    child = max(candidates, key=lambda c: len(c.sessions), default=None)
                    if child is None and held + cfg.max_attempts_per_child <= (
                        cfg.max_store_connections
                    ):
                        child = self._spawn()
                    if child is not None:
                        child.attempts += 1
                        return child
                self._reclaim()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DriverError(
                        "Too many WhatsApp sessions are starting at once; try again",
                        code="capacity",
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._capacity.wait(), timeout=min(remaining, 1.0))

    def _reclaim(self) -> None:
        """Give back store connections: retire children that hold leaked pools and
        no session; failing that, recycle the most wasteful one."""
        for child in list(self._children):
            if child.usable and not child.sessions and not self._busy(child):
                self._retire(child)
        if any(c.retiring and not c.gone for c in self._children):
            return  # room is on its way
        if any(self._busy(c) for c in self._children):
            return  # attempts under way end by themselves and free their child
        # Only established sessions are left: recycle the child that wastes the
        # most (its sessions are reported and reconnect elsewhere).
        wasteful = [
            c
            for c in self._children
            if c.usable
            and all(s.established for s in c.sessions.values())
            and c.attempts - len(c.sessions) >= max(1, self.config.sessions_per_child // 2)
        ]
        if wasteful:
            victim = max(wasteful, key=lambda c: c.attempts - len(c.sessions))
            victim.retiring = True
            self._kill(victim, "was recycled to release leaked database connections")

    @staticmethod
    def _busy(child: _Child) -> bool:
        return any(op != "ping" and not f.done() for op, f in child.pending.values())

    def _maybe_retire(self, child: _Child) -> None:
        """Recycle a child with no session once its attempts (each may hold a
        leaked pool) add up; a child with few keeps serving."""
        if not child.usable or child.sessions or self._busy(child):
            return
        threshold = max(1, self.config.sessions_per_child // 2)
        if child.attempts >= min(threshold, self.config.max_attempts_per_child):
            self._retire(child)

    def _retire(self, child: _Child) -> None:
        if child.retiring:
            return
        child.retiring = True
        log.info("neonize_host_retired", pid=child.pid, attempts=child.attempts)
        self._task(self._shutdown(child))

    # ---- protocol ------------------------------------------------------------------

    async def _write(self, child: _Child, payload: dict[str, Any]) -> None:
        if child.proc is None or child.proc.stdin is None or child.gone:
            raise HostGone("The WhatsApp session host is gone")
        data = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
        async with child.write_lock:
            try:
                child.proc.stdin.write(data)
                await child.proc.stdin.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise HostGone(f"The WhatsApp session host is gone: {exc}") from exc

    async def _request(
        self, child: _Child, op: str, *, timeout: float | None, **args: Any
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
            raise DriverError(
                f"The WhatsApp session host did not answer ({op})", "timeout"
            ) from exc
        finally:
            child.pending.pop(rid, None)
        return result if isinstance(result, dict) else {}

    async def _command(self, session: _Session, op: str, **args: Any) -> dict[str, Any]:
        try:
            return await self._request(
                session.child, op, sid=session.sid, timeout=self.config.call_timeout * 2, **args
            )
        except DriverError as exc:
            if exc.code == "device_not_connected":
                raise NotConnected() from exc
            raise

    def _on_child_message(self, child: _Child, message: dict[str, Any]) -> None:
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
                self._maybe_retire(child)
            return
        ev = message.get("ev")
        if ev == "ready":
            if not child.ready.done():
                child.ready.set_result(None)
            return
        session = self._by_sid.get(str(message.get("sid")))
        if session is None:
            return
        try:
            if ev == "status":
                self._on_status(session, message)
            elif ev == "qr":
                code = str(message["code"])
                expires_at = datetime.fromisoformat(message["expires_at"])
                self._deliver(
                    session, lambda: session.events.on_qr(session.device_id, code, expires_at)
                )
            elif ev == "message":
                wa_message = WaMessage.model_validate(message["message"])
                media = _media(message.get("media"))
                self._deliver(
                    session,
                    lambda: session.events.on_message(session.device_id, wa_message, media),
                )
            elif ev == "receipt":
                receipt = WaReceipt.model_validate(message["receipt"])
                self._deliver(
                    session, lambda: session.events.on_receipt(session.device_id, receipt)
                )
            elif ev == "ended":
                # may come before the reply to its connect (a dial that fails at once)
                self._forget(session)
                self._maybe_retire(child)
                self._task(self._notify_capacity())
        except Exception:
            log.exception("neonize_event_unreadable", ev=ev, device_id=session.device_id)

    def _on_status(self, session: _Session, message: dict[str, Any]) -> None:
        status: str = message["status"]
        if session.closing or session.state == "ended":
            return
        data = {k: message.get(k) for k in ("jid", "phone", "push_name", "error")}
        if status == "connected":
            session.jid = data["jid"] or session.jid
        if status in _TERMINAL:
            session.state = "ended"
            if status == "logged_out" and session.jid:
                jid = session.jid
                self._task(self._delete_stored(jid))
        else:
            session.state = status
        self._deliver_status(session, status, data)

    def _deliver_status(self, session: _Session, status: str, data: dict[str, Any]) -> None:
        if self._stopping:
            return
        kwargs = {k: v for k, v in data.items() if v is not None}
        device_status: DeviceStatus = status  # type: ignore[assignment]
        self._deliver(
            session,
            lambda: session.events.on_status(session.device_id, device_status, **kwargs),
        )

    async def _notify_capacity(self) -> None:
        async with self._capacity:
            self._capacity.notify_all()

    def _forget(self, session: _Session) -> None:
        if self._sessions.get(session.device_id) is session:
            del self._sessions[session.device_id]
        self._by_sid.pop(session.sid, None)
        session.child.sessions.pop(session.sid, None)
        if session.state != "ended":
            session.state = "ended"

    def _connected(self, device_id: str) -> _Session:
        session = self._sessions.get(device_id)
        if session is None or session.closing or session.state != "connected":
            raise NotConnected()
        return session

    # ---- delivery: in order per device, never blocking the pipe readers -----------

    def _deliver(self, session: _Session, call: Callable[[], Awaitable[None]]) -> None:
        queue = self._queues.get(session.device_id)
        if queue is None:
            queue = self._queues[session.device_id] = deque()
            self._task(self._drain(session.device_id, queue))
        queue.append(call)

    async def _drain(self, device_id: str, queue: deque[Callable[[], Awaitable[None]]]) -> None:
        try:
            while queue:
                call = queue.popleft()
                try:
                    await call()
                except Exception:
                    log.exception("driver_event_handler_failed", device_id=device_id)
        finally:
            if self._queues.get(device_id) is queue:
                del self._queues[device_id]

    def _task(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- the session store --------------------------------------------------------

    async def _conn(self) -> asyncpg.Connection:
        if self._db is None or self._db.is_closed():
            self._db = await asyncpg.connect(self.database_url)
        return self._db

    async def _stored_jid(self, jid: str) -> str | None:
        """The store's JID for ``jid`` (exact, else the one of the same number)."""
        sql = f'SELECT jid FROM "{self.config.store_schema}".whatsmeow_device'
        async with self._db_lock:
            conn = await self._conn()
            try:
                rows = await conn.fetch(sql)
            except asyncpg.UndefinedTableError:
                return None
        stored = [str(r["jid"]) for r in rows]
        if jid in stored:
            return jid
        same = [s for s in stored if normalize_jid(s) == normalize_jid(jid)]
        return same[0] if len(same) == 1 else None

    async def _delete_stored(self, jid: str) -> None:
        sql = f'DELETE FROM "{self.config.store_schema}".whatsmeow_device WHERE jid = $1'
        try:
            async with self._db_lock:
                conn = await self._conn()
                await conn.execute(sql, jid)
        except Exception as exc:
            log.warning("neonize_session_delete_failed", jid=jid, error=str(exc))


def _send_result(result: dict[str, Any]) -> SendResult:
    return SendResult(
        wa_message_id=str(result["wa_message_id"]),
        sent_at=datetime.fromisoformat(str(result["sent_at"])),
    )


def _media(raw: Any) -> InboundMedia | None:
    if not isinstance(raw, dict):
        return None
    return InboundMedia(
        data=base64.b64decode(raw["data"]),
        mime_type=str(raw.get("mime_type") or "application/octet-stream"),
        file_name=raw.get("file_name"),
    )


def _json_object(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
