"""The ``neonize`` driver: WhatsApp through whatsmeow (Go) by way of neonize 0.5.2.

neonize can abort the whole process (unsynchronised Go maps), hang in
``connect``/``stop``, and leaks a PostgreSQL pool per connect attempt. So this
driver never loads it in the worker: sessions live in child processes
(:mod:`.neonize_pool`, :mod:`.neonize_host`). This module is the adapter
between the worker's :class:`WhatsAppDriver` interface and those children:

* **Pairing in isolation.** A device with no stored session pairs in a child
  of its own. Once the phone has scanned (``connected``), that child is ended
  and the session resumes from the store in a shared child (*handoff*);
  commands wait for the handoff instead of failing. Stopping a pairing device
  ends its child at once: no call into Go, no other session touched.
* **QR lifecycle.** whatsmeow gives up after its QR codes run out and says so
  only in a log line; the host turns that line into ``disconnected`` with
  ``error="qr_expired"``, and the driver keeps its own deadline (no new code
  within ``qr_grace`` after the last one expired) in case it never comes.
* **Media in two phases.** A message with a file is reported at once with
  ``media_info``; the driver then fetches the file itself
  (:mod:`.neonize_media`, bounded by ``media_max_bytes`` and
  ``media_download_timeout``) and reports it with ``on_media``; ``retry_media``
  fetches it again.
* A session's JID is checked against the store (:mod:`.neonize_store`) before
  a child resumes it: a missing one aborts the process in Go.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

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
from clarin_common.ids import normalize_jid
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
from clarin_devices.worker.drivers.neonize_media import (
    MediaFetcher,
    MediaFetchError,
    MediaRequest,
    MediaTooLarge,
)
from clarin_devices.worker.drivers.neonize_pool import (
    Child,
    ChildPool,
    HostGone,
    NeonizeConfig,
    Role,
)
from clarin_devices.worker.drivers.neonize_store import SessionStore, store_dsn
from clarin_devices.worker.exceptions import (
    AlreadyPaired,
    DriverUnavailable,
    InvalidMedia,
    InvalidPhone,
    MediaUnavailable,
    SessionInUse,
    SessionNotFound,
    UnlinkFailed,
    UnsupportedMedia,
)

__all__ = ["HostGone", "NeonizeConfig", "NeonizeDriver", "NeonizeSession", "store_dsn"]

log = structlog.get_logger(__name__)

_TERMINAL: set[str] = {"disconnected", "logged_out", "error"}


@dataclass(eq=False)
class NeonizeSession:
    sid: str
    device_id: str
    events: DriverEvents
    child: Child
    jid: str | None
    pairing: bool
    started_at: float = field(default_factory=time.monotonic)
    # connecting | qr_pending | connected | handoff | ended
    state: str = "connecting"
    established: bool = False  # the child accepted the connect
    closing: bool = False
    qr_deadline: float | None = None  # monotonic: the pairing is over after it
    linked: asyncio.Event = field(default_factory=asyncio.Event)  # connected (again)


class NeonizeDriver(WhatsAppDriver):
    name = "neonize"

    def __init__(self, database_url: str, config: NeonizeConfig | None = None) -> None:
        self.database_url = database_url
        self.config = config or NeonizeConfig()
        self.dsn = store_dsn(database_url, self.config.store_schema)
        self.store = SessionStore(database_url, self.config.store_schema)
        self.pool = ChildPool(self.config, self.dsn, self._on_event, self._on_child_gone)
        self.media = MediaFetcher(
            max_bytes=self.config.media_max_bytes,
            timeout=self.config.media_download_timeout,
            host=self.config.media_host,
            proxy=self.config.proxy if self.config.media_via_proxy else None,
        )
        self._sessions: dict[str, NeonizeSession] = {}  # by device id
        self._by_sid: dict[str, NeonizeSession] = {}
        self._queues: dict[str, deque[Callable[[], Awaitable[None]]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._start_lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self.spool = tempfile.mkdtemp(prefix="clarin-neonize-")

    # ---- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            # the first child creates whatsmeow's tables: one worker at a time
            async with self.store.creating():
                await self.pool.start()
            self._sweeper = asyncio.create_task(self._sweep(), name="neonize:sweep")
            self._started = True

    async def stop(self) -> None:
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for session in list(self._sessions.values()):
            session.closing = True
        await self.pool.stop()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await self.media.close()
        await self.store.close()
        with contextlib.suppress(OSError):
            os.rmdir(self.spool)

    # ---- the WhatsAppDriver interface ------------------------------------------

    async def connect(self, device_id: str, session_jid: str | None, events: DriverEvents) -> None:
        if self._stopping:
            raise DriverUnavailable("The driver is stopping")
        await self.start()
        if device_id in self._sessions:
            await self.disconnect(device_id)
        jid = await self._resumable(session_jid) if session_jid else None
        role: Role = "shared" if jid else "pairing"
        child = await self.pool.allocate(role)
        session = NeonizeSession(
            sid=uuid.uuid4().hex,
            device_id=device_id,
            events=events,
            child=child,
            jid=jid,
            pairing=jid is None,
        )
        self._sessions[device_id] = session
        self._attach(session, child)
        try:
            await self._start_in(session, child)
        except asyncio.CancelledError:
            # the child may be starting the session: take it down behind it
            session.closing = True
            self._task(self._abandon(session))
            raise
        except BaseException:
            self._forget(session)
            if session.pairing:
                self.pool.retire(child)
            raise

    async def _resumable(self, session_jid: str, device_id: str | None = None) -> str:
        jid = await self.store.stored_jid(session_jid)
        if jid is None:
            raise SessionNotFound(
                f"No stored WhatsApp session for {session_jid}: pair the device again"
            )
        for other in self._sessions.values():
            if (
                other.device_id != device_id
                and other.jid
                and normalize_jid(other.jid) == normalize_jid(jid)
            ):
                raise SessionInUse(
                    f"The session of {session_jid} is in use by device {other.device_id}"
                )
        return jid

    async def _start_in(self, session: NeonizeSession, child: Child) -> None:
        await self.pool.wait_ready(child)
        await self.pool.request(
            child,
            "connect",
            sid=session.sid,
            device_id=session.device_id,
            jid=session.jid,
            timeout=None,  # bounded by the watchdog: the lane must progress
        )
        session.established = True
        self.pool.maybe_retire(child)

    async def _abandon(self, session: NeonizeSession) -> None:
        try:
            await self._end(session)
        finally:
            self._forget(session)

    async def _end(self, session: NeonizeSession) -> None:
        """Stop a session's client: a pairing one by ending its child (whatsmeow's
        QR loop cannot be stopped), a shared one through its child's lane."""
        child = session.child
        if session.pairing:
            await self.pool.shutdown(child)
            return
        with contextlib.suppress(HostGone):
            await self.pool.request(child, "disconnect", sid=session.sid, timeout=None)

    async def disconnect(self, device_id: str) -> None:
        session = self._sessions.get(device_id)
        if session is None:
            return
        session.closing = True
        try:
            await self._end(session)
        finally:
            self._forget(session)

    async def logout(self, device_id: str) -> None:
        session = self._sessions.get(device_id)
        if session is None:
            return
        await self._logout(session)

    async def unlink(self, device_id: str, jid: str | None) -> None:
        """Unlink a number whose session is not live: resume it just long enough
        to log out, then forget it. Raises ``unlink_failed`` when WhatsApp could
        not be told (the stored session is forgotten either way)."""
        session = self._sessions.get(device_id)
        if session is not None and (session.state in ("connected", "handoff") or not jid):
            await self._logout(session)
            return
        if session is not None:
            await self.disconnect(device_id)
        if not jid:
            return
        stored = await self.store.stored_jid(jid)
        if stored is None:
            return  # nothing left to unlink
        events = _UnlinkEvents()
        try:
            await self.connect(device_id, stored, events)
            session = self._sessions.get(device_id)
            if session is None:
                raise UnlinkFailed(events.error or "the session ended")
            try:
                await asyncio.wait_for(
                    _first(session.linked.wait(), events.ended.wait()),
                    self.config.unlink_timeout,
                )
            except TimeoutError:
                pass
            if session.state != "connected":
                await self.disconnect(device_id)
                raise UnlinkFailed(events.error or "WhatsApp did not answer")
            await self._logout(session)
        except DriverError as exc:
            await self.store.delete(stored)
            cause = str(exc) if exc.code == "unlink_failed" else f"{exc}"
            raise UnlinkFailed(UNLINK_FAILED.format(cause=cause)) from exc

    async def _logout(self, session: NeonizeSession) -> None:
        session.closing = True
        jid = session.jid
        error: str | None = None
        try:
            if session.pairing:
                await self.pool.shutdown(session.child)  # nothing linked yet
            else:
                if session.state == "handoff":
                    await _wait(session.linked.wait(), self.config.call_timeout)
                result = await self.pool.request(
                    session.child, "logout", sid=session.sid, timeout=None
                )
                if not result.get("unlinked"):
                    error = str(result.get("error") or "the session was not connected")
        except HostGone as exc:
            error = str(exc)
        finally:
            self._forget(session)
        if jid:
            await self.store.delete(jid)
        if error is not None and jid:
            raise UnlinkFailed(UNLINK_FAILED.format(cause=error))

    def is_connected(self, device_id: str) -> bool:
        session = self._sessions.get(device_id)
        return (
            session is not None
            and session.state in ("connected", "handoff")
            and not session.closing
        )

    async def send_text(
        self,
        device_id: str,
        to_jid: str,
        body: str,
        reply_to: MessageRef | None = None,
        *,
        send_id: str | None = None,
    ) -> SendResult:
        # send_id is not passed on: neonize's SendMessage takes no message id
        session = await self._connected(device_id)
        result = await self._command(
            session, "send_text", to=to_jid, body=body, quoted=_quoted(reply_to)
        )
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
        reply_to: MessageRef | None = None,
        *,
        send_id: str | None = None,
    ) -> SendResult:
        session = await self._connected(device_id)
        if not data:
            raise InvalidMedia("The media file is empty")
        if media_type not in ("image", "video", "audio", "document"):
            raise UnsupportedMedia(f"Sending {media_type} messages is not supported")
        # the file goes to the child as a path, never through the pipe
        fd, path = tempfile.mkstemp(dir=self.spool, prefix="out-")
        try:
            with os.fdopen(fd, "wb") as f:
                await asyncio.to_thread(f.write, data)
            result = await self._command(
                session,
                "send_media",
                to=to_jid,
                media_type=media_type,
                path=path,
                mime_type=mime_type,
                file_name=file_name,
                caption=caption,
                quoted=_quoted(reply_to),
                timeout=self.config.transfer_timeout,
            )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return _send_result(result)

    async def react(
        self, device_id: str, chat_jid: str, target: MessageRef, emoji: str
    ) -> SendResult:
        session = await self._connected(device_id)
        result = await self._command(
            session,
            "react",
            chat=chat_jid,
            target=target.wa_message_id,
            from_me=target.from_me,
            sender=target.sender_jid,
            emoji=emoji,
        )
        return _send_result(result)

    async def edit(
        self, device_id: str, chat_jid: str, wa_message_id: str, body: str
    ) -> SendResult:
        session = await self._connected(device_id)
        result = await self._command(
            session, "edit", chat=chat_jid, target=wa_message_id, body=body
        )
        return _send_result(result)

    async def revoke(self, device_id: str, chat_jid: str, wa_message_id: str) -> SendResult:
        session = await self._connected(device_id)
        result = await self._command(
            session, "revoke", chat=chat_jid, target=wa_message_id, from_me=True
        )
        return _send_result(result)

    async def send_typing(self, device_id: str, chat_jid: str, state: TypingState) -> None:
        session = await self._connected(device_id)
        await self._command(session, "typing", chat=chat_jid, state=state)

    async def mark_read(
        self, device_id: str, chat_jid: str, sender_jid: str | None, wa_message_ids: list[str]
    ) -> None:
        session = await self._connected(device_id)
        if wa_message_ids:
            await self._command(
                session, "mark_read", chat=chat_jid, sender=sender_jid, ids=wa_message_ids
            )

    async def pair_phone(self, device_id: str, phone: str) -> str:
        session = self._sessions.get(device_id)
        if session is None or session.closing or session.state == "ended":
            raise NotConnected()
        if not session.pairing:
            raise AlreadyPaired("The device is already linked to a number")
        digits = "".join(c for c in phone if c.isdigit())
        if not 7 <= len(digits) <= 15:
            raise InvalidPhone("phone must have 7 to 15 digits")
        result = await self._command(session, "pair_phone", phone=digits)
        return str(result["code"])

    async def retry_media(
        self,
        device_id: str,
        wa_message_id: str,
        chat_jid: str,
        mime_type: str,
        download: str | None,
    ) -> None:
        session = self._sessions.get(device_id)
        if session is None or session.closing:
            raise NotConnected()
        try:
            request = MediaRequest.parse(download)
        except MediaFetchError as exc:
            raise MediaUnavailable(str(exc)) from exc
        self._task(self._fetch(session, wa_message_id, chat_jid, mime_type, None, request))

    # ---- observability (tests, bench, /metrics) ----------------------------------

    def child_pids(self, role: Role | None = None) -> list[int]:
        return self.pool.child_pids(role)

    def session_pid(self, device_id: str) -> int | None:
        session = self._sessions.get(device_id)
        return session.child.pid if session is not None else None

    def session(self, device_id: str) -> NeonizeSession | None:
        """The session held for a device, if any: its state, its child, its sid
        (what operators and tests look at; not to be changed from outside)."""
        return self._sessions.get(device_id)

    def store_connections_reserved(self) -> int:
        return self.pool.store_connections_reserved()

    @property
    def child_restarts(self) -> int:
        """Children that ended while holding live sessions (crashed, killed by
        the watchdog, recycled); stopping a pairing device never counts."""
        return self.pool.restarts

    # ---- sessions ----------------------------------------------------------------

    def _attach(self, session: NeonizeSession, child: Child) -> None:
        session.child = child
        child.sessions[session.sid] = session
        self._by_sid[session.sid] = session

    def _forget(self, session: NeonizeSession) -> None:
        if self._sessions.get(session.device_id) is session:
            del self._sessions[session.device_id]
        self._by_sid.pop(session.sid, None)
        session.child.sessions.pop(session.sid, None)
        session.state = "ended"
        session.linked.set()  # nobody waits for a handoff that will not come
        self._task(self.pool.notify())

    async def _connected(self, device_id: str) -> NeonizeSession:
        session = self._sessions.get(device_id)
        if session is not None and session.state == "handoff" and not session.closing:
            await _wait(session.linked.wait(), self.config.call_timeout)
        if session is None or session.closing or session.state != "connected":
            raise NotConnected()
        return session

    async def _command(
        self, session: NeonizeSession, op: str, *, timeout: float | None = None, **args: Any
    ) -> dict[str, Any]:
        try:
            return await self.pool.request(
                session.child,
                op,
                sid=session.sid,
                timeout=timeout or self.config.call_timeout * 2,
                **args,
            )
        except DriverError as exc:
            if exc.code == "device_not_connected":
                raise NotConnected() from exc
            raise

    async def _handoff(self, session: NeonizeSession) -> None:
        """The phone scanned: end the pairing child, resume the session from the
        store in a shared child."""
        pairing_child = session.child
        self._by_sid.pop(session.sid, None)
        pairing_child.sessions.pop(session.sid, None)
        await self.pool.shutdown(pairing_child)
        if session.closing or self._stopping:
            return
        error: str | None = None
        try:
            assert session.jid is not None
            session.jid = await self._resumable(session.jid, session.device_id)
            child = await self.pool.allocate("shared")
            session.sid = uuid.uuid4().hex
            session.pairing = False
            session.established = False
            session.started_at = time.monotonic()
            self._attach(session, child)
            await self._start_in(session, child)
            log.info("neonize_session_handed_off", device_id=session.device_id, pid=child.pid)
        except DriverError as exc:
            error = f"Resuming the new session failed: {exc}"
        except Exception as exc:
            log.exception("neonize_handoff_failed", device_id=session.device_id)
            error = f"Resuming the new session failed: {type(exc).__name__}"
        if error is not None and not session.closing:
            self._deliver_status(session, "disconnected", {"error": error, "jid": session.jid})
            self._forget(session)

    # ---- events from the children ----------------------------------------------------

    def _on_event(self, child: Child, message: dict[str, Any]) -> None:
        ev = message.get("ev")
        session = self._by_sid.get(str(message.get("sid")))
        if session is None:
            return
        try:
            if ev == "status":
                self._on_status(session, message)
            elif ev == "qr":
                self._on_qr(session, message)
            elif ev == "message":
                self._on_message(session, message)
            elif ev == "receipt":
                receipt = WaReceipt.model_validate(message["receipt"])
                self._deliver(
                    session, lambda: session.events.on_receipt(session.device_id, receipt)
                )
            elif ev == "reaction":
                reaction = WaReaction.model_validate(message["reaction"])
                self._deliver(
                    session, lambda: session.events.on_reaction(session.device_id, reaction)
                )
            elif ev == "edit":
                edit = WaEdit.model_validate(message["edit"])
                self._deliver(session, lambda: session.events.on_edit(session.device_id, edit))
            elif ev == "revoke":
                revoke = WaRevoke.model_validate(message["revoke"])
                self._deliver(session, lambda: session.events.on_revoke(session.device_id, revoke))
            elif ev == "presence":
                presence = WaPresence.model_validate(message["presence"])
                self._deliver(
                    session, lambda: session.events.on_presence(session.device_id, presence)
                )
            elif ev == "history":
                # media of history are not fetched (WaHistory: media_info only)
                history = WaHistory.model_validate(message["history"])
                self._deliver(
                    session, lambda: session.events.on_history(session.device_id, history)
                )
            elif ev == "ended":
                # may come before the reply to its connect (a dial that fails at once)
                self._forget(session)
                self.pool.maybe_retire(child)
        except Exception:
            log.exception("neonize_event_unreadable", ev=ev, device_id=session.device_id)

    def _on_qr(self, session: NeonizeSession, message: dict[str, Any]) -> None:
        if session.closing or session.state == "ended":
            return
        code = str(message["code"])
        expires_at = datetime.fromisoformat(message["expires_at"])
        left = (expires_at - datetime.now(UTC)).total_seconds()
        session.qr_deadline = time.monotonic() + max(0.0, left) + self.config.qr_grace
        self._deliver(session, lambda: session.events.on_qr(session.device_id, code, expires_at))

    def _on_message(self, session: NeonizeSession, message: dict[str, Any]) -> None:
        wa_message = WaMessage.model_validate(message["message"])
        self._deliver(
            session, lambda: session.events.on_message(session.device_id, wa_message, None)
        )
        info = wa_message.media_info
        if info is None:
            return
        try:
            request = MediaRequest.parse(info.download)
        except MediaFetchError as exc:
            outcome = MediaOutcome(
                wa_message_id=wa_message.wa_message_id,
                chat_jid=wa_message.chat_jid,
                status="failed",
                error=str(exc),
                retryable=False,
            )
            self._deliver(session, lambda: session.events.on_media(session.device_id, outcome))
            return
        self._task(
            self._fetch(
                session,
                wa_message.wa_message_id,
                wa_message.chat_jid,
                info.mime_type,
                info.file_name,
                request,
            )
        )

    async def _fetch(
        self,
        session: NeonizeSession,
        wa_message_id: str,
        chat_jid: str,
        mime_type: str,
        file_name: str | None,
        request: MediaRequest,
    ) -> None:
        try:
            data = await self.media.fetch(request)
            outcome = MediaOutcome(
                wa_message_id=wa_message_id,
                chat_jid=chat_jid,
                status="ready",
                media=InboundMedia(data=data, mime_type=mime_type, file_name=file_name),
            )
        except MediaTooLarge as exc:
            outcome = MediaOutcome(
                wa_message_id=wa_message_id, chat_jid=chat_jid, status="too_large", error=str(exc)
            )
        except MediaFetchError as exc:
            outcome = MediaOutcome(
                wa_message_id=wa_message_id,
                chat_jid=chat_jid,
                status="failed",
                error=str(exc),
                retryable=exc.retryable,
            )
        except Exception as exc:
            log.exception("neonize_media_fetch_failed", wa_message_id=wa_message_id)
            outcome = MediaOutcome(
                wa_message_id=wa_message_id,
                chat_jid=chat_jid,
                status="failed",
                error=f"The download failed: {type(exc).__name__}",
                retryable=True,
            )
        self._deliver(session, lambda: session.events.on_media(session.device_id, outcome))

    def _on_status(self, session: NeonizeSession, message: dict[str, Any]) -> None:
        status: str = message["status"]
        if session.closing or session.state == "ended":
            return
        data = {k: message.get(k) for k in ("jid", "phone", "push_name", "error")}
        if status == "connected":
            session.jid = data["jid"] or session.jid
            if session.pairing:
                # linked: the user sees it at once; the session moves to a
                # shared child behind the scenes (commands wait for it)
                session.state = "handoff"
                session.qr_deadline = None
                self._deliver_status(session, status, data)
                self._task(self._handoff(session))
                return
            was_handoff = session.state == "handoff"
            session.state = "connected"
            session.linked.set()
            if not was_handoff:
                self._deliver_status(session, status, data)
            return
        if status in _TERMINAL:
            session.state = "ended"
            if status == "logged_out" and session.jid:
                self._task(self.store.delete(session.jid))
            if session.pairing and not message.get("returned"):
                # the QR loop cannot be stopped: its child goes with it
                self._forget(session)
                self.pool.retire(session.child)  # at once: no new pairing goes there
        else:
            session.state = status
        self._deliver_status(session, status, data)

    def _on_child_gone(self, child: Child, message: str) -> int:
        lost = 0
        for session in list(child.sessions.values()):
            if session.established and not session.closing and session.state != "ended":
                lost += 1
                session.state = "ended"
                self._deliver_status(session, "disconnected", {"error": message})
            if session.established:
                self._forget(session)
        return lost

    def _deliver_status(self, session: NeonizeSession, status: str, data: dict[str, Any]) -> None:
        if self._stopping:
            return
        kwargs = {k: v for k, v in data.items() if v is not None}
        device_status: DeviceStatus = status  # type: ignore[assignment]
        self._deliver(
            session,
            lambda: session.events.on_status(session.device_id, device_status, **kwargs),
        )

    async def _sweep(self) -> None:
        """Pairings past their QR deadline and connects WhatsApp never answered."""
        while True:
            await asyncio.sleep(min(1.0, self.config.ping_interval))
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if session.closing or session.state == "ended":
                    continue
                if (
                    session.pairing
                    and session.qr_deadline is not None
                    and now > session.qr_deadline
                    and session.state == "qr_pending"
                ):
                    session.state = "ended"
                    self._deliver_status(session, "disconnected", {"error": QR_EXPIRED})
                    self._task(self.disconnect(session.device_id))
                elif (
                    session.established
                    and session.state == "connecting"
                    and now - session.started_at > self.config.connect_timeout
                ):
                    session.state = "ended"
                    self._deliver_status(
                        session,
                        "disconnected",
                        {
                            "error": "WhatsApp did not answer within "
                            f"{self.config.connect_timeout:g} s"
                        },
                    )
                    self._task(self.disconnect(session.device_id))

    # ---- delivery: in order per device, never blocking the pipe readers -----------

    def _deliver(self, session: NeonizeSession, call: Callable[[], Awaitable[None]]) -> None:
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


class _UnlinkEvents:
    """The events of a session resumed only to unlink it: nothing is reported."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.ended = asyncio.Event()

    async def on_qr(self, device_id: str, code: str, expires_at: datetime) -> None:
        pass

    async def on_status(self, device_id: str, status: DeviceStatus, **data: Any) -> None:
        if status in _TERMINAL:
            self.error = data.get("error") or status
            self.ended.set()

    async def on_message(
        self, device_id: str, message: WaMessage, media: InboundMedia | None
    ) -> None:
        pass

    async def on_media(self, device_id: str, outcome: MediaOutcome) -> None:
        pass

    async def on_receipt(self, device_id: str, receipt: WaReceipt) -> None:
        pass

    async def on_edit(self, device_id: str, edit: WaEdit) -> None:
        pass

    async def on_revoke(self, device_id: str, revoke: WaRevoke) -> None:
        pass

    async def on_reaction(self, device_id: str, reaction: WaReaction) -> None:
        pass

    async def on_presence(self, device_id: str, presence: WaPresence) -> None:
        pass

    async def on_history(self, device_id: str, history: WaHistory) -> None:
        pass


def _quoted(reply_to: MessageRef | None) -> dict[str, Any] | None:
    """What the host needs to quote a message (neonize builds the quote)."""
    if reply_to is None:
        return None
    return {
        "wa_message_id": reply_to.wa_message_id,
        "sender_jid": reply_to.sender_jid,
        "from_me": reply_to.from_me,
        "body": reply_to.body,
    }


async def _first(*aws: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _wait(aw: Awaitable[Any], timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(aw, timeout)


def _send_result(result: dict[str, Any]) -> SendResult:
    return SendResult(
        wa_message_id=str(result["wa_message_id"]),
        sent_at=datetime.fromisoformat(str(result["sent_at"])),
    )
