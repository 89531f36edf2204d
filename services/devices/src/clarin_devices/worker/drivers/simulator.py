"""The simulator driver: a stand-in for WhatsApp with the same events.

Each simulated device behaves like a phone on the other side, driven through
``sim.{device_id}.{action}`` request/reply (API.md "Simulator control"). Sessions
are plain objects with timers on the event loop (no thread or long-lived task
per device), so one worker holds thousands.

Control payloads (reply ``{"ok": true}`` or ``{"ok": false, "error": "…"}``;
no responders means the device has no live session):

- ``scan`` ``{phone}``: the pending QR (or pairing code) is accepted →
  ``connected`` as ``{phone}@s.whatsapp.net``.
- ``inbound`` ``{from, push_name?, body?, type?, wa_message_id?, media?, lid?,
  phone_known?}`` with ``media = {mime_type, file_name?, data_base64, size?,
  fail?, delay?}``; ``type`` defaults to ``text``, or from the media's MIME type
  (image/video/audio, ``image/webp`` → sticker, else document); a fresh
  ``wa_message_id`` unless given.

  Media comes in two phases, as from WhatsApp: the message announces it
  (``media_info``) and the file follows through ``on_media`` once "downloaded":
  after ``delay`` seconds, failing (retryable) the first ``fail`` times,
  ``too_large`` when ``size`` (the size WhatsApp announces, default the data's)
  is above ``media_max_bytes``, timed out when ``delay`` exceeds
  ``download_timeout``. ``retry_media`` downloads it again.

  ``lid`` (digits): the contact writes from ``{lid}@lid``. The simulator knows
  the contact's phone (``from``) the way WhatsApp's LID map does: with
  ``phone_known`` (default true) it tells the phone alongside, as whatsmeow's
  ``SenderAlt`` does (``chat_jid`` the phone form, ``chat_lid`` the LID), and
  remembers the pair for this device; with ``phone_known: false`` and no pair
  learnt yet the message carries the LID only (``chat_jid`` is ``…@lid``).
- ``status_post`` ``{from, body, push_name?}``: the contact posts a status; it
  arrives from ``status@broadcast`` (the worker keeps it out of chats).
- ``qr_timeout`` ``{}``: nobody scans: the pairing ends at once as when the
  codes run out (``disconnected`` with ``error=qr_expired``).
- ``receipt`` ``{wa_message_id, status: delivered|read|played, chat_jid?}``
  (``chat_jid`` only for ids this session did not send).
- ``inbound`` also takes ``reply_to`` (a wa_message_id: the contact quotes it;
  ``quoted_body`` overrides the preview, e.g. for a message Clarin never saw).
- ``edit`` ``{wa_message_id, body, from?}`` / ``revoke`` ``{wa_message_id, from?}``:
  the contact edits / deletes for everyone a message they sent (``from`` only
  for a message this session did not see arrive).
- ``react`` ``{from, wa_message_id, emoji}``: the contact reacts (``""`` removes)
  to a message of either direction.
- ``typing`` ``{from, state}``: ``composing``, ``paused``, ``available`` or
  ``unavailable``.
- ``history`` ``{chats: [{from, push_name?, lid?, messages: [{body, from_me?, at,
  wa_message_id?}]}], sync_id?, last?}``: the history sync after linking (one
  batch; ``last`` defaults to true).
- ``phone`` ``{}``: what the phone saw of our outbound replies, reactions,
  edits, deletes and typing, oldest first: the reply is ``{"ok": true, "seen":
  [{kind, chat_jid, wa_message_id?, body?, emoji?, state?, reply_to?}]}``.
- ``drop`` ``{}``: the connection drops (the worker reconnects by itself).
- ``logout`` ``{}``: the phone unlinks the device (``logged_out``).
- ``unlink_fails`` ``{}``: WhatsApp cannot be told of this device's next unlink
  (``logout`` or delete): the session is forgotten all the same and ``unlink``
  raises ``unlink_failed`` (the phone still lists the device).

What the device sends reaches "the other phones": each accepted outbound
message is announced (core NATS, not a stream) on ``simphone.{device_id}`` as
``{wa_message_id, to, type, body}``, so tests can see what left and how often.
A send with an idempotency key (``send_id``) gets a WhatsApp id derived from
it, as whatsmeow does when given the id: a repeat is the same message, which a
recipient shows once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import json
import secrets
import string
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, Field, ValidationError, field_validator

from clarin_common.contract import MessageType
from clarin_common.events import (
    MediaInfo,
    MessageRef,
    PresenceState,
    TypingState,
    WaEdit,
    WaHistory,
    WaHistoryChat,
    WaMessage,
    WaPresence,
    WaReaction,
    WaReceipt,
    WaRevoke,
    sim_subject,
)
from clarin_common.ids import normalize_jid, phone_digits, phone_from_jid
from clarin_common.outage import NatsOutage, is_outage
from clarin_devices.worker.coalesce import confirm_subscriptions_together
from clarin_devices.worker.drivers import (
    QR_EXPIRED,
    UNLINK_FAILED,
    DriverError,
    DriverEvents,
    InboundMedia,
    MediaOutcome,
    NotConnected,
    SendResult,
    WhatsAppDriver,
)
from clarin_devices.worker.exceptions import (
    AlreadyPaired,
    InvalidMedia,
    MediaGone,
    NotOwnMessage,
    UnlinkFailed,
)

log = structlog.get_logger(__name__)

PHONE_SUBJECT = "simphone.{device_id}"
SENT_MEMORY = 1000  # outbound ids remembered per session (for receipts)
SEEN_MEMORY = 1000  # messages (either way) and phone-side sightings remembered per session
DOWNLOAD_MEMORY = 2000  # inbound files kept for retry_media, per driver
PAIRING_ALPHABET = string.ascii_uppercase + string.digits
STATUS_BROADCAST = "status@broadcast"


@dataclass(frozen=True)
class SimulatorConfig:
    qr_first_delay: float = 1.0
    qr_interval: float = 20.0
    qr_max_codes: int = 6
    receipt_delay: float = 1.0  # sent → delivered
    read_delay: float = 2.0  # delivered → read
    media_max_bytes: int = 64 * 1024 * 1024  # announced size above it: too_large
    download_timeout: float = 120.0  # a slower download fails (retryable)


def _digits(value: str, what: str) -> str:
    digits = phone_digits(value)
    if not 7 <= len(digits) <= 15:
        raise ValueError(f"{what} must have 7 to 15 digits")
    return digits


class ScanRequest(BaseModel):
    phone: str

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return _digits(value, "phone")


class SimMedia(BaseModel):
    mime_type: str = Field(min_length=1)
    file_name: str | None = None
    data_base64: str
    # the size WhatsApp announces (default: the data's), to test the size cap
    size: int | None = Field(None, ge=0)
    # download attempts that fail before one succeeds
    fail: int = Field(0, ge=0, le=100)
    # seconds each download attempt takes
    delay: float = Field(0.0, ge=0, le=600)


class InboundRequest(BaseModel):
    from_: str = Field(alias="from")
    push_name: str | None = None
    body: str | None = None
    type: MessageType | None = None
    wa_message_id: str | None = Field(None, min_length=1, max_length=128)
    media: SimMedia | None = None
    lid: str | None = None
    phone_known: bool = True

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        return _digits(value, "from")

    @field_validator("lid")
    @classmethod
    def _lid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = phone_digits(value.removesuffix("@lid"))
        if not 5 <= len(digits) <= 20:
            raise ValueError("lid must have 5 to 20 digits")
        return digits


class ReplyFields(BaseModel):
    reply_to: str | None = Field(None, min_length=1, max_length=128)
    quoted_body: str | None = None


class EditRequest(BaseModel):
    wa_message_id: str = Field(min_length=1)
    body: str = Field(min_length=1)
    from_: str | None = Field(None, alias="from")


class RevokeRequest(BaseModel):
    wa_message_id: str = Field(min_length=1)
    from_: str | None = Field(None, alias="from")


class ReactRequest(BaseModel):
    from_: str = Field(alias="from")
    wa_message_id: str = Field(min_length=1)
    emoji: str = Field(max_length=32)

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        return _digits(value, "from")


class TypingRequest(BaseModel):
    from_: str = Field(alias="from")
    state: PresenceState

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        return _digits(value, "from")


class HistoryMessageRequest(BaseModel):
    body: str
    from_me: bool = False
    at: datetime
    wa_message_id: str | None = Field(None, min_length=1, max_length=128)


class HistoryChatRequest(BaseModel):
    from_: str = Field(alias="from")
    push_name: str | None = None
    messages: list[HistoryMessageRequest] = Field(max_length=5000)

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        return _digits(value, "from")


class HistoryRequest(BaseModel):
    chats: list[HistoryChatRequest] = Field(max_length=1000)
    sync_id: str | None = Field(None, min_length=1, max_length=64)
    last: bool = True


class StatusPostRequest(BaseModel):
    from_: str = Field(alias="from")
    body: str = Field(min_length=1)
    push_name: str | None = None

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        return _digits(value, "from")


class ReceiptRequest(BaseModel):
    wa_message_id: str = Field(min_length=1)
    status: Literal["delivered", "read", "played"]
    chat_jid: str | None = None


def new_wa_message_id() -> str:
    """An id shaped like WhatsApp's (``3EB0`` + 16 upper-case hex digits)."""
    return "3EB0" + secrets.token_hex(8).upper()


def wa_message_id_for(send_id: str) -> str:
    """The WhatsApp id a send with this idempotency key gets, every time."""
    return "3EB0" + hashlib.sha256(send_id.encode()).hexdigest()[:16].upper()


def _qr_code() -> str:
    parts = [secrets.token_bytes(n) for n in (18, 32, 32, 32)]
    ref = base64.b64encode(parts[0]).decode()
    return "2@" + ",".join([ref, *(base64.b64encode(p).decode() for p in parts[1:])])


def _media_type(mime_type: str) -> MessageType:
    major = mime_type.split("/", 1)[0]
    if mime_type == "image/webp":
        return "sticker"
    if major in ("image", "video", "audio"):
        return major  # type: ignore[return-value]
    return "document"


@dataclass
class _Download:
    """An inbound file as WhatsApp's servers hold it, fetched on demand."""

    device_id: str
    wa_message_id: str
    chat_jid: str
    media: InboundMedia
    size: int
    fails_left: int
    delay: float


@dataclass
class _Session:
    device_id: str
    events: DriverEvents
    jid: str | None
    state: Literal["qr_pending", "connected", "ended"] = "qr_pending"
    qr_codes: int = 0
    timer: asyncio.TimerHandle | None = None
    sub: Subscription | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sent: OrderedDict[str, str] = field(default_factory=OrderedDict)  # wa id → chat jid
    pairing_code: str | None = None
    # wa id → (chat jid, sender jid, body) of messages either way, for quotes
    known: OrderedDict[str, tuple[str, str | None, str | None]] = field(default_factory=OrderedDict)
    # what the phone saw of our replies, reactions, edits, deletes and typing
    seen: list[dict[str, Any]] = field(default_factory=list)


class SimulatorDriver(WhatsAppDriver):
    name = "simulator"

    def __init__(self, nc: NatsClient, config: SimulatorConfig | None = None) -> None:
        self.nc = nc
        self.config = config or SimulatorConfig()
        self._sessions: dict[str, _Session] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        # per device, what its store's LID map has learnt: lid digits → phone digits
        self._lid_maps: dict[str, dict[str, str]] = {}
        self._unlink_fails: set[str] = set()  # devices whose next unlink fails
        # download token (``media_info.download``) → the file, for retry_media
        self._downloads: OrderedDict[str, _Download] = OrderedDict()
        # what an action publishes fails while NATS is away: said once, not per action
        self.outage = NatsOutage("simulator")

    # ---- the WhatsAppDriver interface ------------------------------------------

    async def stop(self) -> None:
        for device_id in list(self._sessions):
            await self.disconnect(device_id)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()

    async def connect(self, device_id: str, session_jid: str | None, events: DriverEvents) -> None:
        await self.disconnect(device_id)
        session = _Session(device_id=device_id, events=events, jid=session_jid)
        self._sessions[device_id] = session

        async def on_control(msg: Msg) -> None:
            # in a task of its own: ending the session unsubscribes, which must
            # never cancel the subscription's delivery task mid-handler; the
            # per-session lock keeps the actions of one device in order
            self._spawn(self._handle_control(session, msg))

        session.sub = await self.nc.subscribe(_control_subjects(device_id), cb=on_control)
        try:
            await confirm_subscriptions_together(self.nc)
        except Exception as exc:  # a NATS blip: the subscription still comes up
            log.debug("sim_subscription_unconfirmed", error=str(exc))
        if session_jid:
            session.state = "connected"
            await events.on_status(
                device_id, "connected", jid=session_jid, phone=phone_from_jid(session_jid)
            )
            return
        await events.on_status(device_id, "qr_pending")
        self._arm(session, self.config.qr_first_delay, self._next_qr)

    async def disconnect(self, device_id: str) -> None:
        session = self._sessions.pop(device_id, None)
        if session is not None:
            await self._end(session)

    async def logout(self, device_id: str) -> None:
        await self.disconnect(device_id)
        self._lid_maps.pop(device_id, None)

    async def unlink(self, device_id: str, jid: str | None) -> None:
        fails = device_id in self._unlink_fails
        self._unlink_fails.discard(device_id)
        await self.logout(device_id)
        if fails:
            raise UnlinkFailed(UNLINK_FAILED.format(cause="WhatsApp did not answer"))

    def is_connected(self, device_id: str) -> bool:
        session = self._sessions.get(device_id)
        return session is not None and session.state == "connected"

    def has_session(self, device_id: str) -> bool:
        """A session of the device is open here, whatever its state."""
        return device_id in self._sessions

    async def send_text(
        self,
        device_id: str,
        to_jid: str,
        body: str,
        reply_to: MessageRef | None = None,
        *,
        send_id: str | None = None,
    ) -> SendResult:
        session = self._connected(device_id)
        result = self._accept(session, to_jid, send_id)
        self._remember(session, result.wa_message_id, normalize_jid(to_jid), session.jid, body)
        await self._to_phone(device_id, result, to_jid, "text", body)
        if reply_to is not None:
            self._saw(session, "reply", to_jid, result.wa_message_id, body=body, reply_to=reply_to)
        return result

    async def _to_phone(
        self, device_id: str, result: SendResult, to_jid: str, type_: str, body: str | None
    ) -> None:
        payload = {"wa_message_id": result.wa_message_id, "to": to_jid, "type": type_, "body": body}
        try:
            await self.nc.publish(
                PHONE_SUBJECT.format(device_id=device_id), json.dumps(payload).encode()
            )
        except Exception as exc:  # only an observer misses it; the send stands
            log.debug("sim_phone_publish_failed", error=str(exc))

    async def send_media(
        self,
        device_id: str,
        to_jid: str,
        media_type: MessageType,
        data: bytes,
        mime_type: str,
        file_name: str | None,
        caption: str | None,
        reply_to: MessageRef | None = None,
        *,
        send_id: str | None = None,
    ) -> SendResult:
        session = self._connected(device_id)
        if not data:
            raise InvalidMedia("The media file is empty")
        result = self._accept(session, to_jid, send_id)
        self._remember(session, result.wa_message_id, normalize_jid(to_jid), session.jid, caption)
        await self._to_phone(device_id, result, to_jid, media_type, caption)
        if reply_to is not None:
            self._saw(
                session, "reply", to_jid, result.wa_message_id, body=caption, reply_to=reply_to
            )
        return result

    async def react(
        self, device_id: str, chat_jid: str, target: MessageRef, emoji: str
    ) -> SendResult:
        session = self._connected(device_id)
        self._saw(session, "reaction", chat_jid, target.wa_message_id, emoji=emoji)
        return SendResult(wa_message_id=new_wa_message_id(), sent_at=datetime.now(UTC))

    async def edit(
        self, device_id: str, chat_jid: str, wa_message_id: str, body: str
    ) -> SendResult:
        session = self._connected(device_id)
        self._own(session, wa_message_id, "edit")
        self._saw(session, "edit", chat_jid, wa_message_id, body=body)
        return SendResult(wa_message_id=new_wa_message_id(), sent_at=datetime.now(UTC))

    async def revoke(self, device_id: str, chat_jid: str, wa_message_id: str) -> SendResult:
        session = self._connected(device_id)
        self._own(session, wa_message_id, "delete")
        self._saw(session, "revoke", chat_jid, wa_message_id)
        return SendResult(wa_message_id=new_wa_message_id(), sent_at=datetime.now(UTC))

    async def send_typing(self, device_id: str, chat_jid: str, state: TypingState) -> None:
        session = self._connected(device_id)
        self._saw(session, "typing", chat_jid, None, state=state)

    @staticmethod
    def _remember(
        session: _Session, wa_message_id: str, chat_jid: str, sender: str | None, body: str | None
    ) -> None:
        session.known[wa_message_id] = (chat_jid, sender, body)
        while len(session.known) > SEEN_MEMORY:
            session.known.popitem(last=False)

    @staticmethod
    def _saw(
        session: _Session,
        kind: str,
        chat_jid: str,
        wa_message_id: str | None,
        *,
        body: str | None = None,
        emoji: str | None = None,
        state: str | None = None,
        reply_to: MessageRef | None = None,
    ) -> None:
        """The phone on the other side shows what we did."""
        session.seen.append(
            {
                "kind": kind,
                "chat_jid": normalize_jid(chat_jid),
                "wa_message_id": wa_message_id,
                "body": body,
                "emoji": emoji,
                "state": state,
                "reply_to": reply_to.wa_message_id if reply_to is not None else None,
            }
        )
        del session.seen[:-SEEN_MEMORY]

    @staticmethod
    def _own(session: _Session, wa_message_id: str, what: str) -> None:
        """WhatsApp lets a number edit or delete only what it sent itself."""
        if wa_message_id not in session.sent:
            raise NotOwnMessage(f"WhatsApp lets you {what} only your own messages")

    async def mark_read(
        self, device_id: str, chat_jid: str, sender_jid: str | None, wa_message_ids: list[str]
    ) -> None:
        self._connected(device_id)

    async def retry_media(
        self,
        device_id: str,
        wa_message_id: str,
        chat_jid: str,
        mime_type: str,
        download: str | None,
    ) -> None:
        session = self._connected(device_id)
        item = self._downloads.get(download or "")
        if item is None or item.device_id != device_id or item.wa_message_id != wa_message_id:
            raise MediaGone("The file is no longer available on WhatsApp")
        self._downloads.move_to_end(download or "")
        self._spawn(self._download(session.events, item))

    async def pair_phone(self, device_id: str, phone: str) -> str:
        session = self._sessions.get(device_id)
        if session is None or session.state == "ended":
            raise NotConnected()
        if session.state == "connected":
            raise AlreadyPaired("The device is already linked to a number")
        _digits(phone, "phone")
        session.pairing_code = "".join(secrets.choice(PAIRING_ALPHABET) for _ in range(8))
        return session.pairing_code

    # ---- sessions ----------------------------------------------------------------

    def _connected(self, device_id: str) -> _Session:
        session = self._sessions.get(device_id)
        if session is None or session.state != "connected":
            raise NotConnected()
        return session

    async def _end(self, session: _Session) -> None:
        session.state = "ended"
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None
        if session.sub is not None:
            sub, session.sub = session.sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection is closing: nothing to undo
                log.debug("sim_unsubscribe_failed", error=str(exc))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None and is_outage(exc):
            self.outage.failed(exc)
        elif exc is not None:
            log.error("sim_task_failed", error=repr(exc))

    def _arm(
        self, session: _Session, delay: float, action: Callable[[_Session], Awaitable[None]]
    ) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            session.timer = None
            if session.state != "ended":
                self._spawn(self._locked(session, action))

        session.timer = loop.call_later(delay, fire)

    async def _locked(
        self, session: _Session, action: Callable[[_Session], Awaitable[None]]
    ) -> None:
        async with session.lock:
            if session.state != "ended" and self._sessions.get(session.device_id) is session:
                await action(session)

    async def _next_qr(self, session: _Session) -> None:
        if session.state != "qr_pending":
            return
        if session.qr_codes >= self.config.qr_max_codes:
            # nobody scanned in time: WhatsApp closes the socket
            await self._qr_expired(session)
            return
        session.qr_codes += 1
        expires_at = datetime.now(UTC) + timedelta(seconds=self.config.qr_interval)
        self._arm(session, self.config.qr_interval, self._next_qr)
        await session.events.on_qr(session.device_id, _qr_code(), expires_at)

    async def _qr_expired(self, session: _Session) -> None:
        self._sessions.pop(session.device_id, None)
        await self._end(session)
        await session.events.on_status(session.device_id, "disconnected", error=QR_EXPIRED)

    async def _download(self, events: DriverEvents, item: _Download) -> None:
        """One download attempt of an announced file; its end goes to ``on_media``."""

        def outcome(**fields: Any) -> MediaOutcome:
            return MediaOutcome(wa_message_id=item.wa_message_id, chat_jid=item.chat_jid, **fields)

        if item.size > self.config.media_max_bytes:
            limit_mib = self.config.media_max_bytes / (1024 * 1024)
            result = outcome(
                status="too_large",
                error=f"The file is larger than the {limit_mib:g} MiB limit",
            )
        elif item.delay > self.config.download_timeout:
            await asyncio.sleep(self.config.download_timeout)
            result = outcome(status="failed", error="The download timed out", retryable=True)
        else:
            if item.delay:
                await asyncio.sleep(item.delay)
            if item.fails_left > 0:
                item.fails_left -= 1
                result = outcome(
                    status="failed",
                    error="WhatsApp's media server did not answer",
                    retryable=True,
                )
            else:
                result = outcome(status="ready", media=item.media)
        await events.on_media(item.device_id, result)

    def _accept(self, session: _Session, to_jid: str, send_id: str | None = None) -> SendResult:
        # like whatsmeow given SendRequestExtra.ID: the same send is the same message
        wa_message_id = wa_message_id_for(send_id) if send_id else new_wa_message_id()
        chat_jid = normalize_jid(to_jid)
        session.sent[wa_message_id] = chat_jid
        while len(session.sent) > SENT_MEMORY:
            session.sent.popitem(last=False)
        self._schedule_receipts(session, wa_message_id, chat_jid)
        return SendResult(wa_message_id=wa_message_id, sent_at=datetime.now(UTC))

    def _schedule_receipts(self, session: _Session, wa_message_id: str, chat_jid: str) -> None:
        delivered_after = self.config.receipt_delay
        steps: tuple[tuple[Literal["delivered", "read"], float], ...] = (
            ("delivered", delivered_after),
            ("read", delivered_after + self.config.read_delay),
        )
        for status, delay in steps:
            receipt = WaReceipt(
                wa_message_ids=[wa_message_id],
                chat_jid=chat_jid,
                sender_jid=chat_jid,
                status=status,
                receipt_at=datetime.now(UTC),
            )
            self._later(delay, functools.partial(self._deliver_receipt, session, receipt))

    def _deliver_receipt(self, session: _Session, receipt: WaReceipt) -> None:
        if session.state == "connected":
            receipt = receipt.model_copy(update={"receipt_at": datetime.now(UTC)})
            self._spawn(session.events.on_receipt(session.device_id, receipt))

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        """A timer the driver cancels on stop."""
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            callback()

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)

    # ---- sim.{device_id}.{action} ------------------------------------------------------

    async def _handle_control(self, session: _Session, msg: Msg) -> None:
        action = msg.subject.rsplit(".", 1)[-1]
        handlers: dict[str, Callable[[_Session, dict[str, Any]], Awaitable[Any]]] = {
            "scan": self._sim_scan,
            "inbound": self._sim_inbound,
            "receipt": self._sim_receipt,
            "drop": self._sim_drop,
            "logout": self._sim_logout,
            "status_post": self._sim_status_post,
            "qr_timeout": self._sim_qr_timeout,
            "edit": self._sim_edit,
            "revoke": self._sim_revoke,
            "react": self._sim_react,
            "typing": self._sim_typing,
            "history": self._sim_history,
            "phone": self._sim_phone,
            "unlink_fails": self._sim_unlink_fails,
        }
        reply: dict[str, Any] = {"ok": True}
        async with session.lock:
            try:
                handler = handlers.get(action)
                if handler is None:
                    raise ValueError(f"unknown action {action!r}")
                if session.state == "ended" or self._sessions.get(session.device_id) is not session:
                    raise ValueError("the device is not connected")
                payload = json.loads(msg.data or b"{}") if msg.data else {}
                if not isinstance(payload, dict):
                    raise ValueError("the payload must be a JSON object")
                extra = await handler(session, payload)
                if extra:
                    reply.update(extra)
            except ValidationError as exc:
                reply = {"ok": False, "error": _validation_message(exc)}
            except (ValueError, DriverError) as exc:
                reply = {"ok": False, "error": str(exc)}
            except Exception as exc:
                if is_outage(exc):
                    self.outage.failed(exc, action=action, device_id=session.device_id)
                else:
                    log.exception("sim_action_failed", action=action, device_id=session.device_id)
                reply = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
            else:
                self.outage.ok()
        if msg.reply:
            await msg.respond(json.dumps(reply).encode())

    async def _sim_scan(self, session: _Session, payload: dict[str, Any]) -> None:
        request = ScanRequest.model_validate(payload)
        if session.state != "qr_pending":
            raise ValueError("no QR code is pending on this device")
        if session.qr_codes == 0 and session.pairing_code is None:
            raise ValueError("no QR code has been shown yet")
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None
        session.state = "connected"
        session.jid = f"{request.phone}@s.whatsapp.net"
        await session.events.on_status(
            session.device_id, "connected", jid=session.jid, phone=request.phone
        )

    async def _sim_inbound(self, session: _Session, payload: dict[str, Any]) -> None:
        request = InboundRequest.model_validate(payload)
        reply = ReplyFields.model_validate(payload)
        if session.state != "connected":
            raise ValueError("the device is not connected")
        media: InboundMedia | None = None
        if request.media is not None:
            try:
                data = base64.b64decode(request.media.data_base64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("media.data_base64 is not valid base64") from exc
            media = InboundMedia(
                data=data, mime_type=request.media.mime_type, file_name=request.media.file_name
            )
        if media is None and request.body is None:
            raise ValueError("an inbound message needs a body or media")
        message_type: MessageType = request.type or (
            _media_type(media.mime_type) if media else "text"
        )
        chat_jid, chat_lid = self._contact_address(session.device_id, request)
        wa_message_id = request.wa_message_id or new_wa_message_id()
        download: _Download | None = None
        media_info: MediaInfo | None = None
        if media is not None and request.media is not None:
            token = secrets.token_urlsafe(12)
            size = request.media.size if request.media.size is not None else len(media.data)
            download = _Download(
                device_id=session.device_id,
                wa_message_id=wa_message_id,
                chat_jid=chat_jid,
                media=media,
                size=size,
                fails_left=request.media.fail,
                delay=request.media.delay,
            )
            self._remember_download(token, download)
            media_info = MediaInfo(
                mime_type=media.mime_type, file_name=media.file_name, size=size, download=token
            )
        message = WaMessage(
            wa_message_id=wa_message_id,
            chat_jid=chat_jid,
            chat_lid=chat_lid,
            sender_jid=chat_jid,
            sender_lid=chat_lid,
            push_name=request.push_name,
            direction="in",
            type=message_type,
            body=request.body,
            media_info=media_info,
            sent_at=datetime.now(UTC),
            reply_to=self._quote(session, reply.reply_to, reply.quoted_body),
        )
        self._remember(session, wa_message_id, chat_jid, chat_jid, request.body)
        # the message first, always; its file follows when "downloaded"
        await session.events.on_message(session.device_id, message, None)
        if download is not None:
            self._spawn(self._download(session.events, download))

    @staticmethod
    def _quote(session: _Session, wa_message_id: str | None, body: str | None) -> MessageRef | None:
        """The quote WhatsApp puts in a reply: who wrote the quoted message and
        its text, as far as this phone knows them."""
        if wa_message_id is None:
            return None
        _, sender, known_body = session.known.get(wa_message_id, (None, None, None))
        from_me = wa_message_id in session.sent
        return MessageRef(
            wa_message_id=wa_message_id,
            from_me=from_me,
            sender_jid=session.jid if from_me else sender,
            body=body if body is not None else known_body,
        )

    def _contact_message(
        self, session: _Session, wa_message_id: str, from_: str | None
    ) -> tuple[str, str]:
        """``(chat_jid, sender_jid)`` of a message the contact sent."""
        if wa_message_id in session.sent:
            raise ValueError("the contact can only change messages they sent")
        known = session.known.get(wa_message_id)
        if known is not None:
            return known[0], known[1] or known[0]
        if from_ is None:
            raise ValueError("unknown wa_message_id (pass from for messages not seen here)")
        jid = f"{_digits(from_, 'from')}@s.whatsapp.net"
        return jid, jid

    async def _sim_edit(self, session: _Session, payload: dict[str, Any]) -> None:
        request = EditRequest.model_validate(payload)
        chat_jid, sender = self._contact_message(session, request.wa_message_id, request.from_)
        self._remember(session, request.wa_message_id, chat_jid, sender, request.body)
        await session.events.on_edit(
            session.device_id,
            WaEdit(
                wa_message_id=request.wa_message_id,
                chat_jid=chat_jid,
                sender_jid=sender,
                body=request.body,
                edited_at=datetime.now(UTC),
                edit_id=new_wa_message_id(),
            ),
        )

    async def _sim_revoke(self, session: _Session, payload: dict[str, Any]) -> None:
        request = RevokeRequest.model_validate(payload)
        chat_jid, sender = self._contact_message(session, request.wa_message_id, request.from_)
        await session.events.on_revoke(
            session.device_id,
            WaRevoke(
                wa_message_id=request.wa_message_id,
                chat_jid=chat_jid,
                sender_jid=sender,
                revoked_at=datetime.now(UTC),
                revoke_id=new_wa_message_id(),
            ),
        )

    async def _sim_react(self, session: _Session, payload: dict[str, Any]) -> None:
        request = ReactRequest.model_validate(payload)
        jid = f"{request.from_}@s.whatsapp.net"
        await session.events.on_reaction(
            session.device_id,
            WaReaction(
                wa_message_id=request.wa_message_id,
                chat_jid=jid,
                sender_jid=jid,
                emoji=request.emoji,
                reacted_at=datetime.now(UTC),
                reaction_id=new_wa_message_id(),
            ),
        )

    async def _sim_typing(self, session: _Session, payload: dict[str, Any]) -> None:
        request = TypingRequest.model_validate(payload)
        jid = f"{request.from_}@s.whatsapp.net"
        await session.events.on_presence(
            session.device_id,
            WaPresence(chat_jid=jid, sender_jid=jid, state=request.state, at=datetime.now(UTC)),
        )

    async def _sim_history(self, session: _Session, payload: dict[str, Any]) -> None:
        request = HistoryRequest.model_validate(payload)
        chats: list[WaHistoryChat] = []
        messages: list[WaMessage] = []
        for chat in request.chats:
            jid = f"{chat.from_}@s.whatsapp.net"
            chats.append(WaHistoryChat(chat_jid=jid, name=chat.push_name))
            for item in chat.messages:
                wa_message_id = item.wa_message_id or new_wa_message_id()
                sender = session.jid if item.from_me else jid
                messages.append(
                    WaMessage(
                        wa_message_id=wa_message_id,
                        chat_jid=jid,
                        sender_jid=sender,
                        push_name=None if item.from_me else chat.push_name,
                        direction="out" if item.from_me else "in",
                        body=item.body,
                        sent_at=item.at,
                    )
                )
                self._remember(session, wa_message_id, jid, sender, item.body)
        await session.events.on_history(
            session.device_id,
            WaHistory(
                sync_id=request.sync_id or secrets.token_hex(8),
                last=request.last,
                progress=100 if request.last else None,
                chats=chats,
                messages=messages,
            ),
        )

    async def _sim_phone(self, session: _Session, payload: dict[str, Any]) -> dict[str, Any]:
        return {"seen": list(session.seen)}

    def _contact_address(self, device_id: str, request: InboundRequest) -> tuple[str, str | None]:
        """``(chat_jid, chat_lid)`` of an inbound message: the phone form whenever
        WhatsApp tells it (SenderAlt) or the LID map learnt it earlier."""
        phone_jid = f"{request.from_}@s.whatsapp.net"
        if request.lid is None:
            return phone_jid, None
        lid_jid = f"{request.lid}@lid"
        lid_map = self._lid_maps.setdefault(device_id, {})
        if request.phone_known:
            lid_map[request.lid] = request.from_
        known = lid_map.get(request.lid)
        if known is None:
            return lid_jid, lid_jid
        return f"{known}@s.whatsapp.net", lid_jid

    def _remember_download(self, token: str, download: _Download) -> None:
        self._downloads[token] = download
        while len(self._downloads) > DOWNLOAD_MEMORY:
            self._downloads.popitem(last=False)

    async def _sim_status_post(self, session: _Session, payload: dict[str, Any]) -> None:
        request = StatusPostRequest.model_validate(payload)
        if session.state != "connected":
            raise ValueError("the device is not connected")
        await session.events.on_message(
            session.device_id,
            WaMessage(
                wa_message_id=new_wa_message_id(),
                chat_jid=STATUS_BROADCAST,
                sender_jid=f"{request.from_}@s.whatsapp.net",
                push_name=request.push_name,
                direction="in",
                type="text",
                body=request.body,
                sent_at=datetime.now(UTC),
            ),
            None,
        )

    async def _sim_qr_timeout(self, session: _Session, payload: dict[str, Any]) -> None:
        if session.state != "qr_pending":
            raise ValueError("no QR code is pending on this device")
        await self._qr_expired(session)

    async def _sim_unlink_fails(self, session: _Session, payload: dict[str, Any]) -> None:
        self._unlink_fails.add(session.device_id)

    async def _sim_receipt(self, session: _Session, payload: dict[str, Any]) -> None:
        request = ReceiptRequest.model_validate(payload)
        if session.state != "connected":
            raise ValueError("the device is not connected")
        chat_jid = session.sent.get(request.wa_message_id) or request.chat_jid
        if chat_jid is None:
            raise ValueError("unknown wa_message_id (pass chat_jid for messages not sent here)")
        await session.events.on_receipt(
            session.device_id,
            WaReceipt(
                wa_message_ids=[request.wa_message_id],
                chat_jid=normalize_jid(chat_jid),
                sender_jid=normalize_jid(chat_jid),
                status=request.status,
                receipt_at=datetime.now(UTC),
            ),
        )

    async def _sim_drop(self, session: _Session, payload: dict[str, Any]) -> None:
        self._sessions.pop(session.device_id, None)
        await self._end(session)
        await session.events.on_status(
            session.device_id, "disconnected", error="The connection dropped"
        )

    async def _sim_logout(self, session: _Session, payload: dict[str, Any]) -> None:
        self._sessions.pop(session.device_id, None)
        await self._end(session)
        session.jid = None
        await session.events.on_status(session.device_id, "logged_out")


def _control_subjects(device_id: str) -> str:
    """``sim.{device_id}.*`` (the device id checked as a subject token)."""
    return sim_subject(device_id, "action").rsplit(".", 1)[0] + ".*"


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{loc}: {error.get('msg', '')}" if loc else str(error.get("msg", "")))
    return "; ".join(parts)
