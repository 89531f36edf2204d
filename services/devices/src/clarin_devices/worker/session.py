"""One device held by a worker: its connection attempts, status, commands and pacing.

A session exists only while the worker holds the device's lease. Every
connection attempt has an epoch; driver callbacks of an older attempt (or of a
closed session) are ignored, so a late event never undoes a newer state.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

import asyncpg
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from clarin_common.contract import Device, DeviceStatus, MessageType
from clarin_common.events import (
    Command,
    CommandReply,
    DisconnectCommand,
    EditCommand,
    LogoutCommand,
    MarkReadCommand,
    MediaRef,
    PairPhoneCommand,
    ReactCommand,
    RetryMediaCommand,
    RevokeCommand,
    SendMediaCommand,
    SendTextCommand,
    TypingCommand,
    WaEdit,
    WaHistory,
    WaKind,
    WaMedia,
    WaMessage,
    WaPresence,
    WaReaction,
    WaReceipt,
    WaRevoke,
    WaSent,
    wa_command_subject,
)
from clarin_common.ids import jid_from_recipient, normalize_jid, phone_digits, phone_from_jid
from clarin_devices.settings import WorkerSettings
from clarin_devices.worker import repository as repo
from clarin_devices.worker.coalesce import confirm_subscriptions_together
from clarin_devices.worker.drivers import (
    QR_EXPIRED,
    InboundMedia,
    MediaOutcome,
    SendResult,
    WhatsAppDriver,
)
from clarin_devices.worker.exceptions import (
    DriverError,
    DriverTimeout,
    InvalidCommand,
    InvalidPhone,
    InvalidRecipient,
    NotConnected,
)

log = structlog.get_logger(__name__)

# the "type" key is required: an empty object must not match a command whose
# only field has a default (disconnect, logout)
COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Annotated[Command, Field(discriminator="type")])

CloseMode = Literal[
    "handoff",  # another worker should take it (rebalance, shutdown): status connecting
    "stop",  # the user disconnected it: status disconnected
    "stop_logout",  # the user logged it out: unlink, status logged_out
    "deleted",  # the device row is gone: unlink, no status
    "cmd_disconnect",  # disconnect command: desired and status disconnected
    "cmd_logout",  # logout command: unlink, desired and status logged_out
    "ended",  # the driver ended the session itself (QR gave up, phone unlinked)
    "lost",  # the lease is gone: drop at once, write nothing
]

_UNLINK_MODES = ("stop_logout", "deleted", "cmd_logout")

QR_EXPIRED_MESSAGE = "The QR code expired before it was scanned; connect again for a new one"
STATUS_BROADCAST_JID = "status@broadcast"
# a history batch is published in parts of at most this many JSON bytes of
# messages (NATS refuses a payload over 1 MiB)
HISTORY_PART_BYTES = 512 * 1024


class SessionOwner(Protocol):
    """What a session asks of the worker that holds it."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...

    async def release(self, session: DeviceSession, mode: CloseMode) -> None: ...

    def wake(self) -> None: ...

    def metrics_reconnect(self) -> None: ...

    def metrics_command(self, kind: str, ok: bool) -> None: ...

    async def publish_status(self, device: Device, push_name: str | None = None) -> None: ...

    async def publish_wa(
        self, account_id: str, device_id: str, kind: WaKind, payload: BaseModel
    ) -> None: ...

    async def publish_many(
        self, account_id: str, device_id: str, items: Sequence[tuple[WaKind, BaseModel]]
    ) -> None: ...

    async def publish_qr(
        self, account_id: str, device_id: str, code: str, expires_at: datetime
    ) -> None: ...

    async def store_media(self, device_id: str, media: InboundMedia) -> MediaRef: ...

    async def load_media(self, media: MediaRef) -> bytes: ...


@dataclass(frozen=True)
class SessionContext:
    """What every session of one worker shares, handed in by the worker."""

    settings: WorkerSettings
    worker_id: str
    pool: asyncpg.Pool
    nc: NatsClient
    driver: WhatsAppDriver
    owner: SessionOwner


class _AttemptEvents:
    """The ``DriverEvents`` handed to the driver for one connection attempt."""

    def __init__(self, session: DeviceSession, epoch: int) -> None:
        self.session = session
        self.epoch = epoch

    async def on_qr(self, device_id: str, code: str, expires_at: datetime) -> None:
        if self.session.current(self.epoch):
            await self.session.handle_qr(self.epoch, code, expires_at)

    async def on_status(
        self,
        device_id: str,
        status: DeviceStatus,
        *,
        jid: str | None = None,
        phone: str | None = None,
        push_name: str | None = None,
        error: str | None = None,
    ) -> None:
        if self.session.current(self.epoch):
            await self.session.handle_status(
                self.epoch, status, jid=jid, phone=phone, push_name=push_name, error=error
            )

    async def on_message(
        self, device_id: str, message: WaMessage, media: InboundMedia | None
    ) -> None:
        # a message that made it here is real even if the attempt just ended
        if not self.session.closed:
            await self.session.handle_message(message, media)

    async def on_media(self, device_id: str, outcome: MediaOutcome) -> None:
        # like a message: the file of a message we published must follow it
        if not self.session.closed:
            await self.session.handle_media(outcome)

    async def on_receipt(self, device_id: str, receipt: WaReceipt) -> None:
        if not self.session.closed:
            await self.session.handle_receipt(receipt)

    async def on_edit(self, device_id: str, edit: WaEdit) -> None:
        if not self.session.closed:
            await self.session.publish_if_chat("edit", edit.chat_jid, edit)

    async def on_revoke(self, device_id: str, revoke: WaRevoke) -> None:
        if not self.session.closed:
            await self.session.publish_if_chat("revoke", revoke.chat_jid, revoke)

    async def on_reaction(self, device_id: str, reaction: WaReaction) -> None:
        if not self.session.closed:
            await self.session.publish_if_chat("reaction", reaction.chat_jid, reaction)

    async def on_presence(self, device_id: str, presence: WaPresence) -> None:
        if not self.session.closed:
            await self.session.publish_if_chat("presence", presence.chat_jid, presence)

    async def on_history(self, device_id: str, history: WaHistory) -> None:
        if not self.session.closed:
            await self.session.handle_history(history)


class DeviceSession:
    def __init__(
        self,
        context: SessionContext,
        device_id: str,
        account_id: str,
        jid: str | None,
        lease_revision: int,
    ) -> None:
        self.worker = context.owner
        self.settings = context.settings
        self.worker_id = context.worker_id
        self.pool = context.pool
        self.nc = context.nc
        self.driver = context.driver
        self.device_id = device_id
        self.account_id = account_id
        self.jid = jid
        self.lease_revision = lease_revision
        self.lease_ok_at = asyncio.get_running_loop().time()
        self.epoch = 0
        self.closed = False
        self._connected = False
        # called whenever ``connected`` changes (the send queue waits on it, no timer)
        self._watchers: list[Callable[[], None]] = []
        self.attempts = 0  # connection attempts made
        self.failures = 0  # consecutive failures (backoff exponent)
        self.pairing = False  # the current attempt is showing QR codes
        self._connect_task: asyncio.Task[None] | None = None
        self._cmd_sub: Subscription | None = None
        self._cmd_tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # status handling and closing, one at a time
        self._send_lock: asyncio.Lock | None = None
        self._next_send_at = 0.0

    def current(self, epoch: int) -> bool:
        return not self.closed and epoch == self.epoch

    @property
    def connected(self) -> bool:
        return self._connected

    @connected.setter
    def connected(self, value: bool) -> None:
        if value != self._connected:
            self._connected = value
            for watcher in list(self._watchers):
                watcher()

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever ``connected`` changes."""
        self._watchers.append(callback)

    # ---- connecting ------------------------------------------------------------------

    def start(self, delay: float) -> None:
        self._schedule_connect(delay)

    def _schedule_connect(self, delay: float) -> None:
        if self.closed:
            return
        task = self._connect_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self._connect_task = asyncio.create_task(
            self._connect_after(delay), name=f"connect:{self.device_id}"
        )

    def _schedule_retry(self) -> None:
        s = self.settings
        backoff = min(s.reconnect_max_seconds, s.reconnect_base_seconds * 2**self.failures)
        self.failures = min(self.failures + 1, 30)
        delay = backoff * random.uniform(0.5, 1.0)
        self.worker.metrics_reconnect()
        log.info("device_reconnect_scheduled", device_id=self.device_id, delay=round(delay, 3))
        self._schedule_connect(delay)

    async def _connect_after(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        async with self._lock:
            if self.closed:
                return
            self.epoch += 1
            epoch = self.epoch
            self.pairing = False
            if self.attempts == 0:  # a retry leaves the error (and its message) showing
                await self._write("connecting", require_desired="connected")
        driver = self.driver
        timeout = self.settings.driver_call_timeout_seconds
        if self.attempts > 0:  # start clean after a failed or dropped attempt
            await self._call_quietly(driver.disconnect(self.device_id), "disconnect")
        self.attempts += 1
        try:
            await asyncio.wait_for(
                driver.connect(self.device_id, self.jid, _AttemptEvents(self, epoch)), timeout
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, TimeoutError):
                message = "Connecting timed out"
            log.warning("device_connect_failed", device_id=self.device_id, error=message)
            if isinstance(exc, DriverError) and exc.code == "session_not_found":
                # the stored session is gone: only a new pairing brings the number back
                await self.handle_status(epoch, "logged_out", error=message)
            else:
                await self.handle_status(epoch, "error", error=message)

    async def _call_quietly(self, call: Awaitable[Any], what: str) -> None:
        try:
            await asyncio.wait_for(call, self.settings.driver_call_timeout_seconds)
        except Exception as exc:
            log.warning("driver_call_failed", device_id=self.device_id, call=what, error=str(exc))

    # ---- what the driver reports ---------------------------------------------------------

    async def handle_status(
        self,
        epoch: int,
        status: DeviceStatus,
        *,
        jid: str | None = None,
        phone: str | None = None,
        push_name: str | None = None,
        error: str | None = None,
    ) -> None:
        async with self._lock:
            if not self.current(epoch):
                return
            if status == "qr_pending":
                self.connected = False
                self.pairing = True
                await self._write("qr_pending", require_desired="connected", set_error=True)
                await self._subscribe_commands()
            elif status == "connecting":
                await self._write("connecting", require_desired="connected")
            elif status == "connected":
                if jid:
                    self.jid = jid
                phone = phone or (phone_from_jid(self.jid) if self.jid else None)
                # answer commands before anyone hears "connected": a send made the
                # moment the device shows connected must find us listening
                await self._subscribe_commands()
                self.connected = True
                self.failures = 0
                await self._write(
                    "connected",
                    require_desired="connected",
                    jid=self.jid,
                    phone=phone,
                    set_error=True,
                    push_name=push_name,
                )
            elif status == "disconnected":
                self.connected = False
                await self._unsubscribe_commands()
                if self.jid:  # a linked session dropped: get it back
                    await self._write(
                        "connecting",
                        require_desired="connected",
                        last_error=error,
                        set_error=error is not None,
                    )
                    self._schedule_retry()
                elif self.pairing or error == QR_EXPIRED:
                    # the pairing ended without a scan (codes ran out, or the
                    # driver's own deadline): wait for the user to ask again
                    await self._write(
                        "disconnected",
                        require_desired="connected",
                        set_desired="disconnected",
                        last_error=QR_EXPIRED_MESSAGE,
                        set_error=True,
                    )
                    self.worker.spawn(self.worker.release(self, "ended"))
                else:  # failed before showing a QR: a connection failure, retried
                    await self._write(
                        "error",
                        require_desired="connected",
                        last_error=error or "The connection failed",
                        set_error=True,
                    )
                    self._schedule_retry()
            elif status == "logged_out":
                self.connected = False
                self.jid = None
                await self._unsubscribe_commands()
                await self._write(
                    "logged_out",
                    require_desired=None,
                    set_desired="logged_out",
                    last_error=error,
                    set_error=True,
                )
                self.worker.spawn(self.worker.release(self, "ended"))
            elif status == "error":
                self.connected = False
                await self._unsubscribe_commands()
                await self._write(
                    "error",
                    require_desired="connected",
                    last_error=error or "The connection failed",
                    set_error=True,
                )
                self._schedule_retry()

    async def handle_qr(self, epoch: int, code: str, expires_at: datetime) -> None:
        async with self._lock:
            if not self.current(epoch):
                return
            stored = await repo.set_qr(self.pool, self.worker_id, self.device_id, code, expires_at)
        if stored:
            await self.worker.publish_qr(self.account_id, self.device_id, code, expires_at)

    async def handle_message(self, message: WaMessage, media: InboundMedia | None) -> None:
        if normalize_jid(message.chat_jid) == STATUS_BROADCAST_JID:
            # a contact's status post: not a conversation (drivers drop them
            # too; this keeps any that slip through out of chats and leads)
            return
        if media is not None:
            ref = await self.worker.store_media(self.device_id, media)
            message = message.model_copy(update={"media": ref})
        await self.worker.publish_wa(self.account_id, self.device_id, "message", message)

    async def handle_media(self, outcome: MediaOutcome) -> None:
        if outcome.status == "ready" and outcome.media is not None:
            ref = await self.worker.store_media(self.device_id, outcome.media)
            event = WaMedia(
                wa_message_id=outcome.wa_message_id,
                chat_jid=outcome.chat_jid,
                status="ready",
                media=ref,
            )
        else:
            event = WaMedia(
                wa_message_id=outcome.wa_message_id,
                chat_jid=outcome.chat_jid,
                status="failed" if outcome.status == "ready" else outcome.status,
                error=outcome.error or "the download gave no file",
                retryable=outcome.retryable or outcome.status == "ready",
            )
        await self.worker.publish_wa(self.account_id, self.device_id, "media", event)

    async def handle_receipt(self, receipt: WaReceipt) -> None:
        await self.worker.publish_wa(self.account_id, self.device_id, "receipt", receipt)

    async def publish_if_chat(self, kind: WaKind, chat_jid: str, event: BaseModel) -> None:
        """An edit, revoke, reaction or presence: published unless it belongs to
        a status post (``status@broadcast`` is no conversation)."""
        if normalize_jid(chat_jid) == STATUS_BROADCAST_JID:
            return
        await self.worker.publish_wa(self.account_id, self.device_id, kind, event)

    async def handle_history(self, history: WaHistory) -> None:
        """Publish a history batch in parts that fit a NATS message, in order;
        ``last`` stays on the final part only, the chats ride on the first."""
        messages = [
            m for m in history.messages if normalize_jid(m.chat_jid) != STATUS_BROADCAST_JID
        ]
        chats = [c for c in history.chats if normalize_jid(c.chat_jid) != STATUS_BROADCAST_JID]
        parts: list[list[WaMessage]] = [[]]
        size = 0
        for message in messages:
            length = len(message.model_dump_json())
            if parts[-1] and size + length > HISTORY_PART_BYTES:
                parts.append([])
                size = 0
            parts[-1].append(message)
            size += length
        items: list[tuple[WaKind, BaseModel]] = [
            (
                "history",
                history.model_copy(
                    update={
                        "messages": part,
                        "chats": chats if i == 0 else [],
                        "last": history.last and i == len(parts) - 1,
                    }
                ),
            )
            for i, part in enumerate(parts)
        ]
        await self.worker.publish_many(self.account_id, self.device_id, items)

    async def _write(
        self,
        status: DeviceStatus,
        *,
        require_desired: str | None,
        jid: str | None = None,
        phone: str | None = None,
        last_error: str | None = None,
        set_error: bool = False,
        set_desired: str | None = None,
        push_name: str | None = None,
    ) -> None:
        transition = await repo.set_status(
            self.pool,
            self.worker_id,
            self.device_id,
            status,
            require_desired=require_desired,
            jid=jid,
            phone=phone,
            last_error=last_error,
            set_error=set_error,
            set_desired=set_desired,
        )
        if transition is None:
            if require_desired == "connected" and not self.closed:
                self.worker.wake()  # the user changed their mind: reconcile now
            return
        if transition.changed:
            await self.worker.publish_status(transition.device, push_name)

    async def report_connected(self) -> None:
        """Say ``connected`` again if this session is (its worker's heartbeat lapsed
        and the devices API showed the device ``connecting`` meanwhile)."""
        async with self._lock:
            if not self.closed and self.connected:
                await self._write("connected", require_desired="connected")

    # ---- closing -----------------------------------------------------------------------

    async def close(self, mode: CloseMode) -> None:
        """End the session; the worker releases the lease afterwards."""
        if self.closed:
            return
        self.closed = True
        self.epoch += 1  # callbacks of the attempt in flight are ignored from now on
        task = self._connect_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        # the connection goes first (a lost lease must not wait for a status write)
        await self._unsubscribe_commands()
        driver = self.driver
        unlink_error: str | None = None
        if mode in _UNLINK_MODES:
            unlink_error = await self._unlink()
        elif mode != "ended":
            await self._call_quietly(driver.disconnect(self.device_id), "disconnect")
        self.connected = False
        async with self._lock:  # after any status write in flight
            if mode == "handoff":
                await self._write("connecting", require_desired="connected")
            elif mode == "stop":
                await self._write("disconnected", require_desired="disconnected")
            elif mode == "stop_logout":
                await self._write(
                    "logged_out",
                    require_desired="logged_out",
                    last_error=unlink_error,
                    set_error=True,
                )
            elif mode == "cmd_disconnect":
                await self._write("disconnected", require_desired=None, set_desired="disconnected")
            elif mode == "cmd_logout":
                await self._write(
                    "logged_out",
                    require_desired=None,
                    set_desired="logged_out",
                    last_error=unlink_error,
                    set_error=True,
                )

    async def _unlink(self) -> str | None:
        """Unlink the number (the driver resumes a session that is not connected
        just for that); what went wrong, for ``last_error``."""
        try:
            await asyncio.wait_for(
                self.driver.unlink(self.device_id, self.jid),
                self.settings.driver_call_timeout_seconds * 2,
            )
        except TimeoutError:
            return (
                "Unlinking the number from WhatsApp timed out; the phone may still list this "
                "device under Linked devices: remove it there"
            )
        except DriverError as exc:
            log.warning("device_unlink_failed", device_id=self.device_id, error=str(exc))
            return str(exc) if exc.code == "unlink_failed" else None
        except Exception as exc:
            log.warning("device_unlink_failed", device_id=self.device_id, error=repr(exc))
        return None

    # ---- commands (wa.cmd.{device_id}) ------------------------------------------------------

    async def _subscribe_commands(self) -> None:
        if self._cmd_sub is None and not self.closed:
            sub = await self.nc.subscribe(wa_command_subject(self.device_id), cb=self._on_command)
            if self.closed:  # closed while subscribing: answer nothing more
                await sub.unsubscribe()
                return
            self._cmd_sub = sub
            # commands sent as soon as the device shows connected must find us
            try:
                await confirm_subscriptions_together(self.nc)
            except Exception as exc:  # a NATS blip: the subscription still comes up
                log.debug("command_subscription_unconfirmed", error=str(exc))

    async def _unsubscribe_commands(self) -> None:
        sub, self._cmd_sub = self._cmd_sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("command_unsubscribe_failed", error=str(exc))

    async def _on_command(self, msg: Msg) -> None:
        # each command in a task of its own: a paced send must not hold up a
        # logout, and closing the session must not cancel the handler
        task = asyncio.create_task(self._handle_command(msg))
        self._cmd_tasks.add(task)
        task.add_done_callback(self._cmd_tasks.discard)

    async def _handle_command(self, msg: Msg) -> None:
        kind = "invalid"
        try:
            command = COMMAND_ADAPTER.validate_json(msg.data)
            kind = command.type
            result = await self._dispatch(command)
            reply = CommandReply(ok=True, result=result)
        except ValidationError as exc:
            reply = CommandReply(
                ok=False, error={"code": "invalid_command", "message": str(exc)[:500]}
            )
        except DriverError as exc:
            reply = CommandReply(ok=False, error={"code": exc.code, "message": str(exc)})
        except Exception as exc:
            log.exception("command_failed", device_id=self.device_id, command=kind)
            reply = CommandReply(
                ok=False, error={"code": "internal_error", "message": type(exc).__name__}
            )
        self.worker.metrics_command(kind, reply.ok)
        if msg.reply:
            try:
                await msg.respond(reply.model_dump_json().encode())
            except Exception as exc:
                log.warning("command_reply_failed", device_id=self.device_id, error=str(exc))

    async def _dispatch(self, command: Command) -> dict[str, Any]:
        if isinstance(command, SendTextCommand):
            return await self._send(command, "text", command.body, None)
        if isinstance(command, SendMediaCommand):
            return await self._send(command, command.media_type, command.caption, command.media)
        if isinstance(command, MarkReadCommand):
            await self._driver_call(
                self.driver.mark_read(
                    self.device_id, command.chat_jid, command.sender_jid, command.wa_message_ids
                )
            )
            return {}
        if isinstance(command, RetryMediaCommand):
            await self._driver_call(
                self.driver.retry_media(
                    self.device_id,
                    command.wa_message_id,
                    command.chat_jid,
                    command.mime_type,
                    command.download,
                )
            )
            return {}
        if isinstance(command, ReactCommand | EditCommand | RevokeCommand):
            return await self._protocol_message(command)
        if isinstance(command, TypingCommand):
            if not self.driver.is_connected(self.device_id):
                raise NotConnected()
            await self._driver_call(
                self.driver.send_typing(
                    self.device_id, self._recipient(command.chat_jid), command.state
                )
            )
            return {}
        if isinstance(command, PairPhoneCommand):
            digits = phone_digits(command.phone)
            if not 7 <= len(digits) <= 15:
                raise InvalidPhone("a phone number in international format: 7 to 15 digits")
            code = await self._driver_call(self.driver.pair_phone(self.device_id, digits))
            return {"pairing_code": code}
        if isinstance(command, DisconnectCommand):
            await self.worker.release(self, "cmd_disconnect")
            return {}
        if isinstance(command, LogoutCommand):
            await self.worker.release(self, "cmd_logout")
            return {}
        raise InvalidCommand("unknown command")  # pragma: no cover

    async def _driver_call(self, call: Awaitable[Any]) -> Any:
        if self.closed:
            raise NotConnected()
        try:
            return await asyncio.wait_for(call, self.settings.driver_call_timeout_seconds)
        except TimeoutError as exc:
            raise DriverTimeout("WhatsApp did not answer in time") from exc

    async def _pace(self) -> None:
        """Space the sends of this device at ``send_rate_per_second`` (± jitter)."""
        rate = self.settings.send_rate_per_second
        if rate <= 0:
            return
        if self._send_lock is None:
            self._send_lock = asyncio.Lock()
        async with self._send_lock:
            loop = asyncio.get_running_loop()
            wait = self._next_send_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            interval = 1.0 / rate
            jitter = interval * self.settings.send_jitter * random.uniform(-1.0, 1.0)
            self._next_send_at = loop.time() + interval + jitter

    @staticmethod
    def _recipient(to: str) -> str:
        try:
            return jid_from_recipient(to)
        except ValueError as exc:
            raise InvalidRecipient(str(exc)) from exc

    async def _protocol_message(
        self, command: ReactCommand | EditCommand | RevokeCommand
    ) -> dict[str, Any]:
        """A reaction, edit or revoke of ours: sent paced like a message; once
        WhatsApp accepts it, its event (``from_me``) goes out so that the store
        reflects it."""
        chat_jid = self._recipient(command.chat_jid)
        if not self.driver.is_connected(self.device_id):
            raise NotConnected()
        await self._pace()
        driver = self.driver
        event: WaReaction | WaEdit | WaRevoke
        kind: WaKind
        if isinstance(command, ReactCommand):
            result: SendResult = await self._driver_call(
                driver.react(self.device_id, chat_jid, command.target, command.emoji)
            )
            kind = "reaction"
            event = WaReaction(
                wa_message_id=command.target.wa_message_id,
                chat_jid=normalize_jid(chat_jid),
                sender_jid=self.jid,
                from_me=True,
                emoji=command.emoji,
                reacted_at=result.sent_at,
                reaction_id=result.wa_message_id,
                message_id=command.message_id,
            )
        elif isinstance(command, EditCommand):
            result = await self._driver_call(
                driver.edit(self.device_id, chat_jid, command.wa_message_id, command.body)
            )
            kind = "edit"
            event = WaEdit(
                wa_message_id=command.wa_message_id,
                chat_jid=normalize_jid(chat_jid),
                sender_jid=self.jid,
                from_me=True,
                body=command.body,
                edited_at=result.sent_at,
                edit_id=result.wa_message_id,
                message_id=command.message_id,
            )
        else:
            result = await self._driver_call(
                driver.revoke(self.device_id, chat_jid, command.wa_message_id)
            )
            kind = "revoke"
            event = WaRevoke(
                wa_message_id=command.wa_message_id,
                chat_jid=normalize_jid(chat_jid),
                sender_jid=self.jid,
                from_me=True,
                revoked_at=result.sent_at,
                revoke_id=result.wa_message_id,
                message_id=command.message_id,
            )
        await self.worker.publish_wa(self.account_id, self.device_id, kind, event)
        return {
            "wa_message_id": result.wa_message_id,
            "sent_at": result.sent_at.astimezone(UTC).isoformat(),
        }

    async def _send(
        self,
        command: SendTextCommand | SendMediaCommand,
        message_type: MessageType,
        body: str | None,
        media: MediaRef | None,
    ) -> dict[str, Any]:
        to_jid = self._recipient(command.to)
        if not self.driver.is_connected(self.device_id):
            raise NotConnected()
        data = await self.worker.load_media(media) if media is not None else b""
        await self._pace()
        driver = self.driver
        try:
            if media is not None:
                assert isinstance(command, SendMediaCommand)
                result: SendResult = await self._driver_call(
                    driver.send_media(
                        self.device_id,
                        to_jid,
                        message_type,
                        data,
                        media.mime_type,
                        media.file_name,
                        command.caption,
                        command.reply_to,
                    )
                )
            else:
                assert isinstance(command, SendTextCommand)
                result = await self._driver_call(
                    driver.send_text(self.device_id, to_jid, command.body, command.reply_to)
                )
        except NotConnected:
            raise
        except DriverError as exc:
            await self.worker.publish_wa(
                self.account_id,
                self.device_id,
                "sent",
                WaSent(
                    message_id=command.message_id,
                    client_id=command.client_id,
                    chat_jid=to_jid,
                    status="failed",
                    error=str(exc),
                    sent_at=datetime.now(UTC),
                ),
            )
            raise
        chat_jid = normalize_jid(to_jid)
        await self.worker.publish_many(
            self.account_id,
            self.device_id,
            [
                (
                    "sent",
                    WaSent(
                        message_id=command.message_id,
                        client_id=command.client_id,
                        chat_jid=chat_jid,
                        wa_message_id=result.wa_message_id,
                        status="sent",
                        sent_at=result.sent_at,
                    ),
                ),
                (
                    "message",
                    WaMessage(
                        wa_message_id=result.wa_message_id,
                        chat_jid=chat_jid,
                        sender_jid=self.jid,
                        direction="out",
                        type=message_type,
                        body=body,
                        media=media,
                        sent_at=result.sent_at,
                        message_id=command.message_id,
                        client_id=command.client_id,
                        reply_to=command.reply_to,
                    ),
                ),
            ],
        )
        return {
            "wa_message_id": result.wa_message_id,
            "sent_at": result.sent_at.astimezone(UTC).isoformat(),
        }
