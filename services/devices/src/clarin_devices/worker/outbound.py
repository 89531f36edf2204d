"""The worker's side of the durable send queue (stream ``WA_OUTBOX``).

messaging stores a send ``pending`` and queues its command on
``wa.out.{device_id}.{priority}`` (``interactive`` or ``bulk``), a work-queue
stream: a message is taken by one consumer and removed once acked. Here:

- Every device this worker holds gets a :class:`DeviceQueue`: two durable pull
  consumers (``out-{device_id}-interactive`` and ``-bulk``, at most one
  unacknowledged message each, so sends leave in the order they were queued),
  taken interactive first, one send at a time at the device's pace
  (``WORKER_SEND_RATE_PER_SECOND`` ± jitter). The consumers are bound only
  once something is queued for the device: one core subscription per worker
  (``wa.out.*.*``) hears every send queued, and what waited before a device
  came is read from the stream's subject counts (one stream read answers every
  device that asks meanwhile, and the sweeper's read every
  ``WORKER_OUTBOX_SWEEP_INTERVAL_SECONDS`` wakes a queue that missed a notice).
  A worker connecting thousands of devices creates no consumer for those with
  nothing to send, and nothing polls.
- A send is acked only after its outcome is recorded in the KV bucket
  ``wa_outbox_done`` (key: the message id, the send's idempotency key) and
  published on ``WA_EVENTS``. A worker killed mid-way leaves the message
  unacked: it comes back after ``WORKER_OUTBOX_ACK_WAIT_SECONDS`` to whichever
  worker then holds the device, which finds the record and only publishes the
  outcome again (messaging is idempotent) instead of sending twice. A crash
  after WhatsApp accepted a send and before the record was written (one KV
  put) sends it again on redelivery: the driver gets the message id as
  ``send_id`` so that the repeat is the same WhatsApp message (the simulator
  derives its WhatsApp id from it). neonize 0.5.2 cannot pass an id
  (``SendMessage`` takes none; whatsmeow's ``SendRequestExtra.ID`` could), so
  on real WhatsApp that window remains: the recipient may see it twice.
- A device that stays unconnected for ``WORKER_SEND_DISCONNECTED_TIMEOUT_SECONDS``
  has its queued sends failed with that reason: by its session's loop while
  this worker holds it, else by the sweeper of the worker that would own it
  (rendezvous hashing over the live workers, the same rule as ownership).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from prometheus_client import Counter
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from clarin_common.events import (
    OUTBOX_DONE_BUCKET,
    SEND_PRIORITIES,
    WA_OUTBOX_STREAM,
    WA_OUTBOX_SUBJECTS,
    RawEnvelope,
    SendCommand,
    SendMediaCommand,
    SendPriority,
    SendTextCommand,
    WaKind,
    WaMessage,
    WaSent,
    wa_outbox_subject,
)
from clarin_common.ids import jid_from_recipient, normalize_jid
from clarin_common.nats import confirm_subscriptions, ensure_kv
from clarin_devices.settings import WorkerSettings
from clarin_devices.worker import hrw
from clarin_devices.worker.coalesce import Coalesced
from clarin_devices.worker.drivers import SendResult, WhatsAppDriver
from clarin_devices.worker.exceptions import DriverError, DriverTimeout, NotConnected
from clarin_devices.worker.session import DeviceSession

log = structlog.get_logger(__name__)

SENDS = Counter(
    "clarin_worker_queued_sends_total",
    "Queued sends taken from WA_OUTBOX, by outcome",
    ["worker_id", "outcome"],
)

SEND_ADAPTER: TypeAdapter[SendCommand] = TypeAdapter(
    Annotated[SendTextCommand | SendMediaCommand, Field(discriminator="type")]
)

PROBE_SECONDS = 0.2  # one fetch that finds nothing costs this long
IDLE_SECONDS = 30.0  # a queue with nothing to send sleeps this long between looks at its flags
# an unconnected device's queue waits for its session to say it connected (and
# for the disconnected timeout); this is only the longest nap between looks
UNCONNECTED_CHECK_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0


def disconnected_reason(seconds: float) -> str:
    return f"The device was not connected for {seconds:g} s; the message was not sent"


class OutboundHost(Protocol):
    """What the queue asks of the worker that runs it."""

    id: str
    sessions: dict[str, DeviceSession]

    async def live_members(self) -> list[str]: ...

    async def publish_many(
        self, account_id: str, device_id: str, items: Sequence[tuple[WaKind, BaseModel]]
    ) -> None: ...

    async def load_media(self, media: Any) -> bytes: ...


class SendRecord(BaseModel):
    """The outcome of a send, kept under its message id in ``wa_outbox_done``."""

    status: Literal["sent", "failed"]
    chat_jid: str
    wa_message_id: str | None = None
    error: str | None = None
    sent_at: datetime


def consumer_name(device_id: str, priority: SendPriority) -> str:
    return f"out-{device_id}-{priority}"


class Outbound:
    """The queue consumers of one worker, and the sweeper of unheld devices."""

    def __init__(
        self,
        host: OutboundHost,
        settings: WorkerSettings,
        nc: NatsClient,
        driver: WhatsAppDriver,
    ) -> None:
        self.host = host
        self.settings = settings
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.driver = driver
        self.queues: dict[str, DeviceQueue] = {}
        self.done: KeyValue
        self._sweeper: asyncio.Task[None] | None = None
        self._unheld_since: dict[str, float] = {}
        self._queued_sub: Subscription | None = None
        self._read_queued = Coalesced(self._queued_subjects, "outbound:queued-subjects")

    async def start(self) -> None:
        self.done = await ensure_kv(
            self.js, OUTBOX_DONE_BUCKET, ttl=self.settings.outbox_done_ttl_seconds
        )
        # every send queued from now on is heard here (before any device is held)
        self._queued_sub = await self.nc.subscribe(WA_OUTBOX_SUBJECTS, cb=self._on_queued)
        await confirm_subscriptions(self.nc)
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="outbound:sweeper")

    async def _on_queued(self, msg: Msg) -> None:
        parts = msg.subject.split(".")
        if len(parts) == 4:
            queue = self.queues.get(parts[2])
            if queue is not None:
                queue.hint(parts[3])

    async def queued_subjects(self) -> set[str]:
        """The ``WA_OUTBOX`` subjects holding sends, read after this call began.
        Whoever asks while a read is under way waits for the next one, which then
        answers them all: a worker taking over thousands of devices reads the
        stream a few times, not once per device."""
        return await self._read_queued()

    async def _queued_subjects(self) -> set[str]:
        info = await self.js.stream_info(WA_OUTBOX_STREAM, subjects_filter=WA_OUTBOX_SUBJECTS)
        return set(info.state.subjects or {})

    async def abandon(self) -> None:
        """Drop every queue at once, finishing nothing (as a killed process would)."""
        tasks = [t for t in (q.abandon() for q in self.queues.values()) if t is not None]
        self.queues.clear()
        await self._unsubscribe_queued()
        if self._sweeper is not None:
            self._sweeper.cancel()
            tasks.append(self._sweeper)
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)

    async def _unsubscribe_queued(self) -> None:
        sub, self._queued_sub = self._queued_sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def stop(self) -> None:
        await asyncio.gather(*(self.detach(d) for d in list(self.queues)))
        await self._unsubscribe_queued()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    def attach(self, session: DeviceSession) -> None:
        """Start taking the device's queued sends (it sends once connected)."""
        if session.device_id not in self.queues:
            queue = DeviceQueue(self, session)
            self.queues[session.device_id] = queue
            queue.start()

    async def detach(self, device_id: str) -> None:
        """Stop taking sends for the device; a send in flight finishes first."""
        queue = self.queues.pop(device_id, None)
        if queue is not None:
            await queue.stop()

    # ---- consumers --------------------------------------------------------------------

    async def bind(self, device_id: str, priority: SendPriority) -> Any:
        name = consumer_name(device_id, priority)
        config = ConsumerConfig(
            durable_name=name,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.settings.outbox_ack_wait_seconds,
            max_deliver=-1,
            # one send in hand at a time: the queue's order is the sending order
            max_ack_pending=1,
            filter_subject=wa_outbox_subject(device_id, priority),
            inactive_threshold=30 * 24 * 3600.0,
        )
        try:
            await self.js.add_consumer(WA_OUTBOX_STREAM, config)
        except Exception as exc:  # exists with another config (a setting changed)
            log.info("outbox_consumer_exists", consumer=name, detail=str(exc)[:200])
        return await self.js.pull_subscribe_bind(name, WA_OUTBOX_STREAM)

    @staticmethod
    async def take(sub: Any, timeout: float = PROBE_SECONDS) -> Msg | None:
        try:
            msgs: list[Msg] = await sub.fetch(1, timeout=timeout)
        except (NatsTimeoutError, TimeoutError):
            return None
        return msgs[0] if msgs else None

    # ---- outcomes -----------------------------------------------------------------------

    async def recorded(self, message_id: str) -> SendRecord | None:
        try:
            entry = await self.done.get(message_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            return SendRecord.model_validate_json(entry.value)
        except ValidationError:
            return None

    async def settle(
        self,
        msg: Msg,
        account_id: str,
        device_id: str,
        command: SendCommand,
        record: SendRecord,
        sender_jid: str | None,
        *,
        fresh: bool,
    ) -> None:
        """Record the outcome (when new), publish it, then ack: in this order, so
        that a crash anywhere leaves a redelivery that publishes and acks."""
        if fresh:
            await self.done.put(command.message_id, record.model_dump_json().encode())
        await self.host.publish_many(
            account_id, device_id, outcome_events(command, record, sender_jid)
        )
        await msg.ack()
        SENDS.labels(self.host.id, record.status if fresh else "repeat").inc()

    async def fail_queued(
        self, device_id: str, reason: str, subs: dict[str, Any] | None = None
    ) -> int:
        """Fail every send queued for the device with ``reason``; how many."""
        own = subs is None
        if subs is None:
            subs = {p: await self.bind(device_id, p) for p in SEND_PRIORITIES}
        failed = 0
        try:
            for priority in SEND_PRIORITIES:
                while (msg := await self.take(subs[priority])) is not None:
                    parsed = await parse(msg, device_id)
                    if parsed is None:
                        continue
                    account_id, command = parsed
                    record = await self.recorded(command.message_id)
                    if record is not None:
                        await self.settle(
                            msg, account_id, device_id, command, record, None, fresh=False
                        )
                        continue
                    record = SendRecord(
                        status="failed",
                        chat_jid=chat_of(command),
                        error=reason,
                        sent_at=datetime.now(UTC),
                    )
                    await self.settle(msg, account_id, device_id, command, record, None, fresh=True)
                    failed += 1
        finally:
            if own:
                for sub in subs.values():
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
        if failed:
            log.warning("queued_sends_failed", device_id=device_id, count=failed, reason=reason)
        return failed

    # ---- devices nobody holds ----------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.outbox_sweep_interval_seconds)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox_sweep_failed", error=str(exc)[:300])

    async def sweep(self) -> int:
        """Fail the sends of devices that no session held for the timeout, among
        those this worker would own; how many. Queues held here with sends waiting
        are woken (in case the notice of a send was lost, say in a reconnect)."""
        subjects = await self.queued_subjects()
        for subject in subjects:
            parts = subject.split(".")
            queue = self.queues.get(parts[2]) if len(parts) == 4 else None
            if queue is not None:
                queue.hint(parts[3])
        queued = {s.split(".")[2] for s in subjects}
        members = await self.host.live_members()
        now = asyncio.get_running_loop().time()
        timeout = self.settings.send_disconnected_timeout_seconds
        for device_id in list(self._unheld_since):
            if device_id not in queued:
                del self._unheld_since[device_id]
        failed = 0
        for device_id in queued:
            if device_id in self.host.sessions or hrw.owner(device_id, members) != self.host.id:
                self._unheld_since.pop(device_id, None)
                continue
            since = self._unheld_since.setdefault(device_id, now)
            if now - since >= timeout:
                failed += await self.fail_queued(device_id, disconnected_reason(timeout))
                self._unheld_since.pop(device_id, None)
        return failed


async def parse(msg: Msg, device_id: str) -> tuple[str, SendCommand] | None:
    """``(account_id, command)`` of a queued send; None (and the message dropped
    for good) when it cannot be one of this device's."""
    try:
        envelope = RawEnvelope.model_validate(json.loads(msg.data))
        command = SEND_ADAPTER.validate_python(envelope.data)
    except (ValueError, ValidationError) as exc:
        log.error("queued_send_unreadable", subject=msg.subject, reason=str(exc)[:300])
        await msg.term()
        return None
    if envelope.device_id != device_id or envelope.id != command.message_id:
        log.error("queued_send_mismatch", subject=msg.subject, event_id=envelope.id)
        await msg.term()
        return None
    return envelope.account_id, command


def chat_of(command: SendCommand) -> str:
    try:
        return normalize_jid(jid_from_recipient(command.to))
    except ValueError:
        return command.to


def outcome_events(
    command: SendCommand, record: SendRecord, sender_jid: str | None
) -> list[tuple[WaKind, BaseModel]]:
    """The ``sent`` event (and, for a sent message, its ``message`` echo), as the
    request/reply send path publishes them."""
    sent = WaSent(
        message_id=command.message_id,
        client_id=command.client_id,
        chat_jid=record.chat_jid,
        wa_message_id=record.wa_message_id,
        status=record.status,
        error=record.error,
        sent_at=record.sent_at,
    )
    if record.status != "sent" or record.wa_message_id is None:
        return [("sent", sent)]
    if isinstance(command, SendMediaCommand):
        message_type, body, media = command.media_type, command.caption, command.media
    else:
        message_type, body, media = "text", command.body, None
    echo = WaMessage(
        wa_message_id=record.wa_message_id,
        chat_jid=record.chat_jid,
        sender_jid=sender_jid,
        direction="out",
        type=message_type,
        body=body,
        media=media,
        sent_at=record.sent_at,
        message_id=command.message_id,
        client_id=command.client_id,
        reply_to=command.reply_to,
    )
    return [("sent", sent), ("message", echo)]


class DeviceQueue:
    """The sends of one held device: taken in order, one at a time, paced."""

    def __init__(self, outbound: Outbound, session: DeviceSession) -> None:
        self.out = outbound
        self.session = session
        self.device_id = session.device_id
        self.settings = outbound.settings
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._next_send_at = 0.0
        self._unconnected_since: float | None = None
        # which priorities may hold sends: what the stream held when the device
        # connected, True again whenever a send is heard queued, False once a fetch
        # found none (so an empty interactive queue costs bulk sends no probe, and
        # a device with nothing queued has no consumer bound)
        self._maybe: dict[str, bool] = dict.fromkeys(SEND_PRIORITIES, False)

    def start(self) -> None:
        self.session.watch(self._wake.set)  # (dis)connected: look again, no polling
        self._task = asyncio.create_task(self._run(), name=f"outbound:{self.device_id}")

    def hint(self, priority: str) -> None:
        """A send of this priority may be waiting: look."""
        if priority in self._maybe:
            self._maybe[priority] = True
            self._wake.set()

    def abandon(self) -> asyncio.Task[None] | None:
        """Cancel the loop (its task, to wait on). The flag too: a cancellation that
        lands as a fetch completes can be lost inside nats-py, and the loop must end
        all the same."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
        return self._task

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        task = self._task
        if task is None:
            return
        grace = self.settings.driver_call_timeout_seconds + STOP_GRACE_SECONDS
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    def _connected(self) -> bool:
        return (
            self.session.connected
            and not self.session.closed
            and self.out.driver.is_connected(self.device_id)
        )

    async def _pause(self, seconds: float) -> None:
        """Sleep, unless stopped or woken first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception:  # NATS trouble binding the consumers: try again
                log.exception("outbound_queue_failed", device_id=self.device_id)
                await self._pause(1.0)

    async def _until_connected(self) -> None:
        """Nothing can be sent before the device connects: bind its consumers only
        then (a worker taking over many devices does not add two consumer
        creations per device to its reconnect storm), failing what waits for a
        device that stays unconnected too long meanwhile."""
        loop = asyncio.get_running_loop()
        since = loop.time()
        timeout = self.settings.send_disconnected_timeout_seconds
        while not self._stop.is_set() and not self._connected():
            remaining = timeout - (loop.time() - since)
            if remaining <= 0:
                await self.out.fail_queued(self.device_id, disconnected_reason(timeout))
                since = loop.time()
                continue
            self._wake.clear()
            if self._connected():  # changed before the clear: its wake-up is gone
                break
            await self._pause(min(UNCONNECTED_CHECK_SECONDS, remaining))

    async def _serve(self) -> None:
        subs: dict[str, Any] = {}
        await self._until_connected()
        if self._stop.is_set():
            return
        try:
            # what waited before now (sends queued from now on are heard)
            queued = await self.out.queued_subjects()
            for priority in SEND_PRIORITIES:
                if wa_outbox_subject(self.device_id, priority) in queued:
                    self.hint(priority)
            while not self._stop.is_set():
                try:
                    await self._step(subs)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("outbound_step_failed", device_id=self.device_id)
                    await self._pause(1.0)
        finally:
            for sub in subs.values():
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _step(self, subs: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        if not self._connected():
            now = loop.time()
            if self._unconnected_since is None:
                self._unconnected_since = now
            timeout = self.settings.send_disconnected_timeout_seconds
            if now - self._unconnected_since >= timeout:
                await self.out.fail_queued(
                    self.device_id, disconnected_reason(timeout), subs or None
                )
                self._unconnected_since = now
            self._wake.clear()
            if not self._connected():  # else it changed before the clear: go on at once
                remaining = timeout - (loop.time() - self._unconnected_since)
                await self._pause(min(UNCONNECTED_CHECK_SECONDS, max(remaining, 0.0)))
            return
        self._unconnected_since = None
        wait = self._next_send_at - loop.time()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)
            return
        self._wake.clear()
        if not subs and any(self._maybe.values()):  # the first send: bind now
            subs.update({p: await self.out.bind(self.device_id, p) for p in SEND_PRIORITIES})
        slot = loop.time()
        msg: Msg | None = None
        for priority in SEND_PRIORITIES:  # interactive first
            if not self._maybe[priority]:
                continue
            self._maybe[priority] = False
            msg = await self.out.take(subs[priority])
            if msg is not None:
                self._maybe[priority] = True
                break
        if msg is None:
            await self._pause(IDLE_SECONDS)
            return
        await self._handle(msg, slot)

    def _paced(self, slot: float) -> None:
        """The next send may start one interval (± jitter) after this one started:
        the time a send itself takes is part of the interval, not added to it."""
        rate = self.settings.send_rate_per_second
        if rate <= 0:
            return
        interval = 1.0 / rate
        jitter = interval * self.settings.send_jitter * random.uniform(-1.0, 1.0)
        self._next_send_at = slot + interval + jitter

    async def _handle(self, msg: Msg, slot: float) -> None:
        parsed = await parse(msg, self.device_id)
        if parsed is None:
            return
        account_id, command = parsed
        out = self.out
        record = await out.recorded(command.message_id)
        if record is not None:  # sent (or failed) before a crash: only tell again
            await out.settle(
                msg, account_id, self.device_id, command, record, self.session.jid, fresh=False
            )
            return
        try:
            to_jid = jid_from_recipient(command.to)
        except ValueError as exc:
            await self._record_failure(msg, account_id, command, command.to, str(exc))
            return
        try:
            result = await self._send(command, to_jid)
        except NotConnected:
            # dropped just now: back to the queue, still first in line
            await msg.nak(delay=1.0)
            return
        except DriverError as exc:
            self._paced(slot)
            await self._record_failure(msg, account_id, command, normalize_jid(to_jid), str(exc))
            return
        self._paced(slot)
        record = SendRecord(
            status="sent",
            chat_jid=normalize_jid(to_jid),
            wa_message_id=result.wa_message_id,
            sent_at=result.sent_at,
        )
        await out.settle(
            msg, account_id, self.device_id, command, record, self.session.jid, fresh=True
        )

    async def _record_failure(
        self, msg: Msg, account_id: str, command: SendCommand, chat_jid: str, error: str
    ) -> None:
        record = SendRecord(
            status="failed", chat_jid=chat_jid, error=error, sent_at=datetime.now(UTC)
        )
        await self.out.settle(msg, account_id, self.device_id, command, record, None, fresh=True)

    async def _send(self, command: SendCommand, to_jid: str) -> SendResult:
        driver = self.out.driver
        timeout = self.settings.driver_call_timeout_seconds
        try:
            if isinstance(command, SendMediaCommand):
                data = await self.out.host.load_media(command.media)
                return await asyncio.wait_for(
                    driver.send_media(
                        self.device_id,
                        to_jid,
                        command.media_type,
                        data,
                        command.media.mime_type,
                        command.media.file_name,
                        command.caption,
                        command.reply_to,
                        send_id=command.message_id,
                    ),
                    timeout,
                )
            return await asyncio.wait_for(
                driver.send_text(
                    self.device_id,
                    to_jid,
                    command.body,
                    command.reply_to,
                    send_id=command.message_id,
                ),
                timeout,
            )
        except TimeoutError as exc:
            raise DriverTimeout("WhatsApp did not answer in time") from exc
