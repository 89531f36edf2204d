"""The device worker: membership, ownership by HRW, leases, reconcile.

- Membership: every worker puts its id into the ``device_workers`` KV bucket
  every ``heartbeat_interval``; the bucket's TTL drops a worker that stopped.
- Ownership: a device whose desired state is ``connected`` belongs to the live
  worker with the highest rendezvous score for it.
- Leases: before connecting, the owner creates ``device_leases/{device_id}``
  (fails while another worker holds it) and renews it with revision-checked
  updates; a failed renew drops the session before anything else. Connecting
  only while holding the lease keeps a number from ever being connected twice.
- Reconcile: every ``reconcile_interval`` and on ``devices.changed``, compare
  the devices this worker should hold with those it holds and fix the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import secrets
import uuid
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from prometheus_client import Counter, Gauge
from pydantic import BaseModel

from clarin_common.contract import Device
from clarin_common.events import MediaRef, WaKind, WaQr, wa_envelope, wa_event_subject
from clarin_common.nats import (
    ensure_kv,
    ensure_object_store,
    kv_keys,
    publish_event,
    publish_events,
)
from clarin_common.outage import NatsOutage, is_outage
from clarin_devices.events import (
    DEVICES_CHANGED_SUBJECT,
    notify_devices_changed,
    publish_device_status,
)
from clarin_devices.settings import WorkerSettings
from clarin_devices.worker import hrw
from clarin_devices.worker import repository as repo
from clarin_devices.worker.drivers import InboundMedia, WhatsAppDriver
from clarin_devices.worker.exceptions import MediaNotFound
from clarin_devices.worker.outbound import Outbound
from clarin_devices.worker.session import CloseMode, DeviceSession, SessionContext

log = structlog.get_logger(__name__)

SESSIONS = Gauge("clarin_worker_sessions", "Devices held by this worker", ["worker_id"])
CONNECTED = Gauge("clarin_worker_connected", "Devices connected on this worker", ["worker_id"])
LEASES_LOST = Counter("clarin_worker_leases_lost_total", "Leases lost", ["worker_id"])
RECONNECTS = Counter("clarin_worker_reconnects_total", "Reconnects scheduled", ["worker_id"])
COMMANDS = Counter("clarin_worker_commands_total", "wa.cmd handled", ["worker_id", "type", "ok"])

# devices.changed reasons that say nothing about the workers (the API's changes)
DEVICE_REASONS = frozenset({"connect", "disconnect", "logout", "delete"})
MEMBERS_MAX_AGE = 1.0  # seconds a members read serves reconciles woken by device changes
STAGGER_PER_DEVICE = 0.05  # seconds of spread per device taken over in one pass
LEASE_CONCURRENCY = 64
# lease renewals in flight at once: a pass over 2,500 leases at 64 a time took
# longer than the TTL on a busy machine, and every lease was lost
RENEW_CONCURRENCY = 512


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        pool: asyncpg.Pool,
        nc: NatsClient,
        driver: WhatsAppDriver,
    ) -> None:
        self.settings = settings
        self.id = settings.worker_id
        self.pool = pool
        self.nc = nc
        self.js = nc.jetstream()
        self.driver = driver
        self.session_context = SessionContext(
            settings=settings, worker_id=self.id, pool=pool, nc=nc, driver=driver, owner=self
        )
        self.sessions: dict[str, DeviceSession] = {}
        # the durable send queue of the devices held here (worker/outbound.py)
        self.outbound = Outbound(self, settings, nc, driver)
        self._closing: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._wakeup = asyncio.Event()
        self._reconcile_lock = asyncio.Lock()
        self._stopping = False
        self._started = False
        self._members: list[str] = [self.id]
        self._heartbeat_revision: int | None = None
        # NATS away: said once for the worker (nats_unavailable), not per beat or device
        self.outage = NatsOutage(f"worker:{self.id}")
        self._members_read_at = float("-inf")
        self._members_news = True  # read the members bucket at the next reconcile
        self._owners: dict[str, str | None] = {}  # device → owner among _owners_of
        self._owners_of: list[str] = []
        # a lease value names this process; a restart under the same id adopts them
        self._process = secrets.token_hex(4)
        self._lease_value = f"{self.id}/{self._process}".encode()
        self._changed_sub: Subscription | None = None
        self.members_kv: KeyValue
        self.leases_kv: KeyValue
        self.media: ObjectStore

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.members_kv = await ensure_kv(self.js, s.members_bucket, ttl=s.heartbeat_ttl_seconds)
        self.leases_kv = await ensure_kv(self.js, s.leases_bucket, ttl=s.lease_ttl_seconds)
        self.media = await ensure_object_store(self.js)
        await self.outbound.start()
        await self.driver.start()
        await self.heartbeat()
        self._changed_sub = await self.nc.subscribe(DEVICES_CHANGED_SUBJECT, cb=self._on_changed)
        SESSIONS.labels(self.id).set_function(lambda: len(self.sessions))
        CONNECTED.labels(self.id).set_function(
            lambda: sum(1 for x in self.sessions.values() if x.connected)
        )
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name="worker:heartbeat"),
            asyncio.create_task(self._renew_loop(), name="worker:renew"),
            asyncio.create_task(self._reconcile_loop(), name="worker:reconcile"),
        ]
        self._started = True
        # peers rebalance towards the newcomer at once
        await notify_devices_changed(self.nc, "worker_joined")
        log.info("worker_started", worker_id=self.id, driver=self.driver.name)

    async def stop(self) -> None:
        """Hand every device over: close sessions, release leases, leave."""
        if self._stopping:
            return
        self._stopping = True
        log.info("worker_stopping", worker_id=self.id, sessions=len(self.sessions))
        if self._changed_sub is not None:
            with contextlib.suppress(Exception):
                await self._changed_sub.unsubscribe()
        for task in self._loops[2:]:  # no more reconciling; heartbeats and renewals go on
            task.cancel()
        async with self._reconcile_lock:
            await asyncio.gather(
                *(self.release(session, "handoff") for session in list(self.sessions.values()))
            )
            if self._closing:
                await asyncio.wait(list(self._closing.values()), timeout=10)
        await self.outbound.stop()
        await self._end_loops()
        with contextlib.suppress(Exception):
            await self.members_kv.delete(self.id)
        await notify_devices_changed(self.nc, "worker_left")
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=2)
        try:
            await asyncio.wait_for(self.driver.stop(), self.settings.driver_call_timeout_seconds)
        except Exception as exc:
            log.warning("driver_stop_failed", error=str(exc))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        log.info("worker_stopped", worker_id=self.id)

    async def _end_loops(self) -> None:
        """Cancel the loops and wait until they are over, cancelling again as long
        as one runs on: Python 3.11's ``asyncio.wait_for`` drops a cancellation
        that arrives just as what it waits for completes (a heartbeat's KV put
        answered, the reconcile wake-up set), and a loop cancelled once would then
        run for good, and ``stop()`` wait for it for good."""
        while pending := [task for task in self._loops if not task.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        for task in self._loops:  # retrieved: a loop that failed says so once, here
            if not task.cancelled() and task.exception() is not None:
                log.error("worker_loop_failed", loop=task.get_name(), error=repr(task.exception()))

    @property
    def loops(self) -> tuple[asyncio.Task[None], ...]:
        """The background loops (heartbeat, renew, reconcile) while started."""
        return tuple(self._loops)

    @property
    def ready(self) -> bool:
        return self._started and not self._stopping

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker_task_failed", error=repr(task.exception()))

    def wake(self) -> None:
        self._wakeup.set()

    async def _on_changed(self, msg: Msg) -> None:
        try:
            reason = json.loads(msg.data).get("reason")
        except (ValueError, AttributeError):
            reason = None
        if reason not in DEVICE_REASONS:  # a worker came, left or handed devices over
            self._members_news = True
        self._wakeup.set()

    # ---- membership ----------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Put this worker (and how many devices it holds) into the members bucket.

        Each beat updates the revision the last one wrote: when that fails, the key
        expired or was deleted meanwhile (a stall, NATS away), so the devices API
        has shown this worker's devices ``connecting`` (devices/holders.py) and the
        sessions still connected say ``connected`` again."""
        value = json.dumps(
            {"worker_id": self.id, "sessions": len(self.sessions), "process": self._process}
        ).encode()
        if self._heartbeat_revision is not None:
            try:
                self._heartbeat_revision = await self.members_kv.update(
                    self.id, value, last=self._heartbeat_revision
                )
                return
            except KeyWrongLastSequenceError:
                own = await self._own_heartbeat_revision()
                if own is not None:  # a beat of ours that went through late (NATS was back)
                    self._heartbeat_revision = own
                    return
                log.warning("heartbeat_lapsed", worker_id=self.id)
                self._heartbeat_revision = await self.members_kv.put(self.id, value)
                for session in list(self.sessions.values()):
                    self.spawn(session.report_connected())
                return
        self._heartbeat_revision = await self.members_kv.put(self.id, value)

    async def _own_heartbeat_revision(self) -> int | None:
        """The members key's revision if this process wrote it, else None."""
        try:
            entry = await self.members_kv.get(self.id)
            written_by = json.loads(entry.value or b"{}").get("process")
        except Exception:
            return None
        return entry.revision if written_by == self._process else None

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_seconds)
            try:
                await self.heartbeat()
            except Exception as exc:
                if is_outage(exc):
                    self.outage.failed(exc)
                else:
                    log.warning("heartbeat_failed", error=str(exc))
            else:
                self.outage.ok()

    async def live_members(self, max_age: float = 0.0) -> list[str]:
        """The live workers; the last view if read less than ``max_age`` ago."""
        now = asyncio.get_running_loop().time()
        if now - self._members_read_at < max_age:
            return self._members
        try:
            keys = await kv_keys(self.members_kv)
        except Exception as exc:  # NATS trouble: keep the last view
            if is_outage(exc):
                self.outage.failed(exc)
            else:
                log.warning("membership_read_failed", error=str(exc))
            return self._members
        self._members_read_at = now
        members = sorted({*keys, self.id})
        if members != self._members:
            log.info("membership_changed", workers=members)
        self._members = members
        return members

    # ---- reconcile ----------------------------------------------------------------------

    def _owners_among(self, members: list[str], device_ids: list[str]) -> dict[str, str | None]:
        """``hrw.owner`` of each device, remembered while the members stay the same
        (a reconcile runs on every change of any device: thousands of hashes each
        time else); only the devices asked for now are kept."""
        known = self._owners if members == self._owners_of else {}
        owners: dict[str, str | None] = {}
        for device_id in device_ids:
            if device_id in known:
                owners[device_id] = known[device_id]
            else:
                owners[device_id] = hrw.owner(device_id, members)
        self._owners, self._owners_of = owners, list(members)
        return owners

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(
                    self._wakeup.wait(), self.settings.reconcile_interval_seconds
                )
            except TimeoutError:
                self._members_news = True  # the periodic pass reads the members afresh
            self._wakeup.clear()
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile_failed")
                await asyncio.sleep(0.5)

    async def reconcile(self) -> None:
        async with self._reconcile_lock:
            if self._stopping:
                return
            # woken by a device change (thousands while devices connect): the members
            # read just before still stand; a worker joining, leaving or handing over,
            # and every periodic pass, read them afresh (a KV read is a consumer each)
            fresh, self._members_news = self._members_news, False
            members = await self.live_members(0.0 if fresh else MEMBERS_MAX_AGE)
            rows = await repo.wanted(self.pool)
            owners = self._owners_among(members, [str(r["id"]) for r in rows])
            wanted = {str(r["id"]): r for r in rows if owners[str(r["id"])] == self.id}
            handed_off = await self._release_unwanted(wanted)
            await self._acquire(
                [r for d, r in wanted.items() if d not in self.sessions and d not in self._closing]
            )
            if handed_off:
                await notify_devices_changed(self.nc, "handoff")

    async def _release_unwanted(self, wanted: dict[str, asyncpg.Record]) -> bool:
        unwanted = [d for d in self.sessions if d not in wanted]
        if not unwanted:
            return False
        desired = await repo.desired_states(self.pool, unwanted)
        modes: dict[str, CloseMode] = {}
        for device_id in unwanted:
            state = desired.get(device_id)
            modes[device_id] = (
                "handoff"
                if state == "connected"
                else "stop"
                if state == "disconnected"
                else "stop_logout"
                if state == "logged_out"
                else "deleted"
            )
        await asyncio.gather(
            *(
                self.release(self.sessions[d], mode)
                for d, mode in modes.items()
                if d in self.sessions
            )
        )
        return "handoff" in modes.values()

    async def _acquire(self, candidates: Sequence[asyncpg.Record]) -> None:
        if not candidates:
            return
        gate = asyncio.Semaphore(LEASE_CONCURRENCY)

        async def take(row: asyncpg.Record) -> tuple[asyncpg.Record, int | None]:
            async with gate:
                return row, await self._take_lease(str(row["id"]))

        taken = [(r, rev) for r, rev in await asyncio.gather(*map(take, candidates)) if rev]
        if not taken:
            return
        await repo.claim(self.pool, self.id, [str(r["id"]) for r, _ in taken])
        spread = (
            0.0
            if len(taken) == 1
            else min(self.settings.reconnect_stagger_seconds, len(taken) * STAGGER_PER_DEVICE)
        )
        log.info("devices_acquired", count=len(taken), spread=spread)
        for row, revision in taken:
            device_id = str(row["id"])
            session = DeviceSession(
                self.session_context, device_id, row["account_id"], row["jid"], revision
            )
            self.sessions[device_id] = session
            session.start(random.uniform(0, spread) if spread else 0.0)
            self.outbound.attach(session)

    async def release(self, session: DeviceSession, mode: CloseMode) -> None:
        """Close a session and give its device back (lease and claim)."""
        device_id = session.device_id
        if session.closed or self.sessions.get(device_id) is not session:
            pending = self._closing.get(device_id)
            if pending is not None:  # someone else is releasing it: wait for them
                await asyncio.shield(pending)
            return
        del self.sessions[device_id]

        async def run() -> None:
            try:
                # a send in flight finishes (and is recorded) before the connection goes
                await self.outbound.detach(device_id)
                await session.close(mode)
                if mode != "lost":
                    with contextlib.suppress(Exception):
                        await repo.unclaim(self.pool, self.id, device_id)
                    await self._release_lease(device_id, session.lease_revision)
            finally:
                self._closing.pop(device_id, None)

        task = asyncio.create_task(run(), name=f"release:{device_id}")
        self._closing[device_id] = task
        log.info("device_released", device_id=device_id, mode=mode)
        await asyncio.shield(task)

    # ---- leases --------------------------------------------------------------------------

    async def _take_lease(self, device_id: str) -> int | None:
        try:
            return await self.leases_kv.create(device_id, self._lease_value)
        except KeyWrongLastSequenceError:
            return await self._adopt_lease(device_id)
        except Exception as exc:
            if is_outage(exc):
                self.outage.failed(exc)
            else:
                log.warning("lease_take_failed", device_id=device_id, error=str(exc))
            return None

    async def _adopt_lease(self, device_id: str) -> int | None:
        """A lease left by an earlier process with this worker id is ours to take."""
        try:
            entry = await self.leases_kv.get(device_id)
        except KeyNotFoundError:
            return None
        holder = (entry.value or b"").decode(errors="replace").split("/", 1)[0]
        if holder != self.id or entry.value == self._lease_value or entry.revision is None:
            return None
        try:
            revision = await self.leases_kv.update(
                device_id, self._lease_value, last=entry.revision
            )
        except Exception:
            return None
        log.info("lease_adopted", device_id=device_id)
        return revision

    async def _own_lease_revision(self, device_id: str) -> int | None:
        """The lease's revision if it holds this process's value, else None."""
        try:
            entry = await self.leases_kv.get(device_id)
        except Exception:
            return None
        return entry.revision if entry.value == self._lease_value else None

    async def _release_lease(self, device_id: str, revision: int) -> None:
        try:
            await self.leases_kv.delete(device_id, last=revision)
        except Exception as exc:  # expired or taken already: not ours anyway
            log.debug("lease_release_failed", device_id=device_id, error=str(exc))

    async def _renew_loop(self) -> None:
        """Every lease renewed once per ``renew_interval``, counted from the start
        of one pass to the next (a pass over thousands of leases takes a while:
        added to the interval it would let them expire), many KV updates in
        flight at once."""
        gate = asyncio.Semaphore(RENEW_CONCURRENCY)
        loop = asyncio.get_running_loop()

        async def renew(session: DeviceSession) -> None:
            async with gate:
                await self._renew(session)

        next_at = loop.time() + self.settings.renew_interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = loop.time() + self.settings.renew_interval
            await asyncio.gather(*map(renew, list(self.sessions.values())))

    async def _renew(self, session: DeviceSession) -> None:
        loop = asyncio.get_running_loop()
        try:
            session.lease_revision = await asyncio.wait_for(
                self.leases_kv.update(
                    session.device_id, self._lease_value, last=session.lease_revision
                ),
                self.settings.renew_interval,
            )
            session.lease_ok_at = loop.time()
            return
        except (KeyWrongLastSequenceError, KeyNotFoundError) as exc:
            revision = await self._own_lease_revision(session.device_id)
            if revision is not None:
                # our own renewal, applied after we gave up waiting for it (NATS came
                # back and the buffered update went through): the lease is still ours
                session.lease_revision = revision
                return
            reason = f"lease taken or expired: {exc}"
        except Exception as exc:
            # cannot tell: keep the session only while the lease surely still stands
            if loop.time() - session.lease_ok_at < self.settings.lease_ttl_seconds * 0.6:
                if is_outage(exc):
                    self.outage.failed(exc)
                else:
                    log.warning("lease_renew_failed", device_id=session.device_id, error=str(exc))
                return
            reason = f"lease not renewed in time: {exc}"
        if self.sessions.get(session.device_id) is not session:
            return
        LEASES_LOST.labels(self.id).inc()
        log.warning("lease_lost", device_id=session.device_id, reason=reason)
        await self.release(session, "lost")
        self.wake()

    # ---- publishing ----------------------------------------------------------------------

    async def publish_status(self, device: Device, push_name: str | None = None) -> None:
        await publish_device_status(
            self.js, device, worker_id=self.id, push_name=push_name, outage=self.outage
        )

    async def publish_wa(
        self, account_id: str, device_id: str, kind: WaKind, payload: BaseModel
    ) -> None:
        await publish_event(
            self.js,
            wa_event_subject(account_id, device_id, kind),
            wa_envelope(account_id, device_id, kind, payload),
        )

    async def publish_many(
        self, account_id: str, device_id: str, items: Sequence[tuple[WaKind, BaseModel]]
    ) -> None:
        await publish_events(
            self.js,
            [
                (
                    wa_event_subject(account_id, device_id, kind),
                    wa_envelope(account_id, device_id, kind, payload),
                )
                for kind, payload in items
            ],
        )

    async def publish_qr(
        self, account_id: str, device_id: str, code: str, expires_at: datetime
    ) -> None:
        await self.publish_wa(account_id, device_id, "qr", WaQr(code=code, expires_at=expires_at))

    async def store_media(self, device_id: str, media: InboundMedia) -> MediaRef:
        key = f"in/{device_id}/{uuid.uuid4()}"
        await self.media.put(key, media.data)
        return MediaRef(
            object_key=key,
            mime_type=media.mime_type,
            file_name=media.file_name,
            size=len(media.data),
            sha256=hashlib.sha256(media.data).hexdigest(),
        )

    async def load_media(self, media: MediaRef) -> bytes:
        try:
            result = await self.media.get(media.object_key)
        except Exception as exc:
            raise MediaNotFound(f"media {media.object_key!r} is not in the store") from exc
        return bytes(result.data or b"")

    # ---- metrics -----------------------------------------------------------------------

    def metrics_reconnect(self) -> None:
        RECONNECTS.labels(self.id).inc()

    def metrics_command(self, kind: str, ok: bool) -> None:
        COMMANDS.labels(self.id, kind, str(ok).lower()).inc()
