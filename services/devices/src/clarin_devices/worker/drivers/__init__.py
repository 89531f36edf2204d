"""The ``WhatsAppDriver`` interface and its two drivers (``simulator``, ``neonize``).

A worker process runs one driver; the driver holds one session per device the
worker owns and reports what happens through :class:`DriverEvents`. The worker
(not the driver) owns leases, reconnect policy, pacing and publishing to NATS.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from clarin_common.contract import DeviceStatus, MessageType
from clarin_common.events import (
    MessageRef,
    TypingState,
    WaEdit,
    WaHistory,
    WaMessage,
    WaPresence,
    WaReaction,
    WaReceipt,
    WaRevoke,
)

# the drivers raise these; they live with the worker's other errors
from clarin_devices.worker.exceptions import DriverError as DriverError
from clarin_devices.worker.exceptions import NotConnected as NotConnected
from clarin_devices.worker.exceptions import RetryUnsupported


@dataclass(frozen=True)
class SendResult:
    wa_message_id: str
    sent_at: datetime


@dataclass(frozen=True)
class InboundMedia:
    """Media bytes of an inbound message, before they are put in the object store."""

    data: bytes
    mime_type: str
    file_name: str | None = None


@dataclass(frozen=True)
class MediaOutcome:
    """The end of a media download: ``media`` when ``status`` is ``ready``, else
    ``error`` (and whether :meth:`WhatsAppDriver.retry_media` may try again)."""

    wa_message_id: str
    chat_jid: str
    status: Literal["ready", "failed", "too_large"]
    media: InboundMedia | None = None
    error: str | None = None
    retryable: bool = False


# the ``error`` of ``on_status("disconnected")`` when a pairing ended without a
# scan (the QR codes ran out or the driver's pairing deadline passed)
QR_EXPIRED = "qr_expired"
# the message of ``unlink_failed`` (the web app recognises "still lists this device")
UNLINK_FAILED = (
    "Could not unlink the number from WhatsApp ({cause}); the phone still lists this "
    "device under Linked devices: remove it there"
)


class DriverEvents(Protocol):
    """Callbacks a driver calls (on the worker's event loop) for one device."""

    async def on_qr(self, device_id: str, code: str, expires_at: datetime) -> None: ...

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
        """``connected`` (with jid/phone once paired), ``qr_pending``, ``disconnected``
        (connection dropped or gave up: the worker decides whether to reconnect),
        ``logged_out`` (unlinked: session gone), ``error`` (with ``error``).

        How the worker reads them: ``disconnected`` of a paired session (a JID)
        → status ``connecting`` and a reconnect with backoff; ``disconnected``
        after ``qr_pending`` without a scan, or with ``error=QR_EXPIRED`` → the
        pairing ended (status and desired state ``disconnected``, ``last_error``
        says the QR expired, no retry); ``disconnected`` before any
        ``qr_pending`` and ``error`` → status ``error`` with ``error`` as
        ``last_error``, retried with backoff; ``logged_out`` → status and desired
        state ``logged_out``, JID cleared. A :class:`DriverError` raised by
        ``connect`` counts as ``error``, except code ``session_not_found``
        (the stored session is gone), which counts as ``logged_out``."""

    async def on_message(
        self, device_id: str, message: WaMessage, media: InboundMedia | None
    ) -> None:
        """A message. Its file comes either at once (``media``) or later: then
        ``message.media_info`` is set and :meth:`on_media` follows, always."""

    async def on_media(self, device_id: str, outcome: MediaOutcome) -> None:
        """The file announced by an earlier ``message.media_info``, or why not."""

    async def on_receipt(self, device_id: str, receipt: WaReceipt) -> None: ...

    async def on_edit(self, device_id: str, edit: WaEdit) -> None:
        """A message was edited (by the contact, or by our number elsewhere)."""

    async def on_revoke(self, device_id: str, revoke: WaRevoke) -> None:
        """A message was deleted for everyone."""

    async def on_reaction(self, device_id: str, reaction: WaReaction) -> None:
        """A reaction was set, replaced or removed (``emoji`` "")."""

    async def on_presence(self, device_id: str, presence: WaPresence) -> None:
        """A contact is typing / stopped / online / away."""

    async def on_history(self, device_id: str, history: WaHistory) -> None:
        """A batch of the history sync after linking (any size: the worker
        splits it for NATS); ``history.last`` on the final one."""


class WhatsAppDriver(abc.ABC):
    name: str

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Process-wide setup (called once before any session)."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Close every session cleanly (called once at shutdown)."""

    @abc.abstractmethod
    async def connect(self, device_id: str, session_jid: str | None, events: DriverEvents) -> None:
        """Start (or resume, with ``session_jid`` from a previous pairing) the session.

        Returns once the attempt is under way; progress arrives through ``events``
        (``qr_pending`` + ``on_qr`` for a new pairing, ``connected`` when linked).
        Raises :class:`DriverError` when the attempt fails at once.
        """

    @abc.abstractmethod
    async def disconnect(self, device_id: str) -> None:
        """Close the session and keep its credentials (reconnects without a QR)."""

    @abc.abstractmethod
    async def logout(self, device_id: str) -> None:
        """Unlink the number on WhatsApp and forget the session."""

    async def unlink(self, device_id: str, jid: str | None) -> None:
        """Unlink the number on WhatsApp and forget the session, connected or not
        (a driver may resume the stored session of ``jid`` just for that).
        Raises :class:`DriverError` with code ``unlink_failed`` when WhatsApp
        could not be told: the phone still lists the device."""
        await self.logout(device_id)

    @abc.abstractmethod
    def is_connected(self, device_id: str) -> bool: ...

    # ``send_id`` (sends from the queue: the message id) is the send's idempotency
    # key. A driver that can hand it to WhatsApp as the message id does, so that a
    # send repeated after a crash is one message to the recipient; the simulator
    # does, neonize 0.5.2 cannot (its SendMessage takes no id) and ignores it.

    @abc.abstractmethod
    async def send_text(
        self,
        device_id: str,
        to_jid: str,
        body: str,
        reply_to: MessageRef | None = None,
        *,
        send_id: str | None = None,
    ) -> SendResult:
        """Send a text; with ``reply_to`` WhatsApp shows it quoting that message."""

    @abc.abstractmethod
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
    ) -> SendResult: ...

    @abc.abstractmethod
    async def react(
        self, device_id: str, chat_jid: str, target: MessageRef, emoji: str
    ) -> SendResult:
        """React to ``target`` (``emoji`` "" removes our reaction); the result is
        the reaction message's id and time."""

    @abc.abstractmethod
    async def edit(
        self, device_id: str, chat_jid: str, wa_message_id: str, body: str
    ) -> SendResult:
        """Replace the text of our own message ``wa_message_id`` (WhatsApp allows
        it for 15 minutes); the result is the edit message's id and time."""

    @abc.abstractmethod
    async def revoke(self, device_id: str, chat_jid: str, wa_message_id: str) -> SendResult:
        """Delete our own message ``wa_message_id`` for everyone."""

    @abc.abstractmethod
    async def send_typing(self, device_id: str, chat_jid: str, state: TypingState) -> None:
        """Show (``composing``) or stop showing (``paused``) us typing in ``chat_jid``."""

    @abc.abstractmethod
    async def mark_read(
        self, device_id: str, chat_jid: str, sender_jid: str | None, wa_message_ids: list[str]
    ) -> None: ...

    async def retry_media(
        self,
        device_id: str,
        wa_message_id: str,
        chat_jid: str,
        mime_type: str,
        download: str | None,
    ) -> None:
        """Fetch again a file whose download failed; the outcome arrives through
        ``on_media``. ``download`` is the ``media_info.download`` the driver
        put on the message. Raises :class:`DriverError` when it cannot try."""
        raise RetryUnsupported(f"the {self.name} driver cannot fetch media again")

    @abc.abstractmethod
    async def pair_phone(self, device_id: str, phone: str) -> str:
        """Ask for an 8-character pairing code for ``phone`` (needs a live socket)."""


DriverName = Literal["simulator", "neonize"]
