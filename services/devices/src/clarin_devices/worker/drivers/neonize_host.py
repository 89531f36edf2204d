"""A child process of the device worker that holds a group of neonize sessions.

Run as ``python -m clarin_devices.worker.drivers.neonize_host``; spoken to by
:mod:`clarin_devices.worker.drivers.neonize_driver` over JSON lines:

* parent → child on stdin: ``{"id": n, "op": ..., ...}`` requests, and
  ``{"op": "shutdown"}``;
* child → parent on a private copy of stdout: ``{"id": n, "ok": true, "result": ...}``
  / ``{"id": n, "ok": false, "error": ..., "code": ...}`` replies, and events
  ``{"ev": "status" | "qr" | "message" | "receipt" | "ended" | "ready", "sid": ...}``.

Why a process: neonize's Go side keeps global maps without locks and aborts the
whole process on a concurrent write; its calls can hang for good; every connect
attempt leaks a database pool. Here every call into Go goes through one thread
(the *lane*), so that no two of them overlap — a connect holds the lane until it
has settled (its first event, its failure, or ``settle_timeout``). Whatever still
goes wrong costs this process only: the parent reports its sessions and
reconnects them elsewhere, kills it when a call hangs, and recycles it before
its leaked pools add up.

Go writes to file descriptor 1 (``fmt.Println``), so the protocol uses a
duplicate of it and fd 1 is pointed at stderr before anything else runs.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

HOOKS_ENV = "CLARIN_NEONIZE_TEST_HOOKS"
FIRST_QR_SECONDS = 60  # whatsmeow shows the first code for 60 s, the next ones for 20 s
NEXT_QR_SECONDS = 20

log = logging.getLogger("clarin.neonize_host")


class HostError(Exception):
    def __init__(self, message: str, code: str = "driver_error") -> None:
        super().__init__(message)
        self.code = code


# ---- pure mapping helpers (no neonize import needed) ----------------------------


def proto_time(value: int) -> datetime:
    """A neonize timestamp as an aware datetime: seconds in some versions,
    milliseconds in others (``UnixMilli``), 0 when unknown."""
    if value <= 0:
        return datetime.now(UTC)
    if value > 100_000_000_000:  # after 5138 in seconds: it is milliseconds
        return datetime.fromtimestamp(value / 1000, UTC)
    return datetime.fromtimestamp(value, UTC)


def split_jid(jid: str) -> tuple[str, str]:
    """``user[:device]@server`` → (``user[:device]``, ``server``) as neonize's
    ``ClientFactory.get_all_devices_from_db`` builds store JIDs."""
    user, sep, server = jid.strip().partition("@")
    if not sep or not user or not server:
        raise HostError(f"not a JID: {jid!r}", code="invalid_jid")
    return user, server


def normalize(jid: str) -> str:
    user, _, server = jid.strip().partition("@")
    user = user.split(":", 1)[0]
    return f"{user}@{server.lower()}" if server else user


def phone_of(jid: str) -> str | None:
    user, _, server = normalize(jid).partition("@")
    if server != "s.whatsapp.net":
        return None
    digits = "".join(c for c in user if c.isdigit())
    return digits or None


_MEDIA_FIELDS = {
    "imageMessage": "image",
    "videoMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "stickerMessage": "sticker",
}
_WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
    "editedMessage",
)
# parts of a message that carry nothing a user would see
_INVISIBLE = {"senderKeyDistributionMessage", "messageContextInfo", "protocolMessage"}


def unwrap(message: Any) -> Any:
    for _ in range(4):
        for name in _WRAPPERS:
            if message.HasField(name) and message_has(getattr(message, name), "message"):
                message = getattr(message, name).message
                break
        else:
            return message
    return message


def message_has(message: Any, name: str) -> bool:
    try:
        return bool(message.HasField(name))
    except ValueError:
        return False


def classify(message: Any) -> tuple[str, str | None, str | None] | None:
    """(type, body, media field) of a waE2E Message, or None when nothing shows."""
    names = {fd.name for fd, _ in message.ListFields()}
    if not names - _INVISIBLE:
        return None
    for name, kind in _MEDIA_FIELDS.items():
        if name in names:
            sub = getattr(message, name)
            caption = getattr(sub, "caption", "") or None
            return kind, caption, name
    if "conversation" in names:
        return "text", message.conversation, None
    if "extendedTextMessage" in names:
        return "text", message.extendedTextMessage.text, None
    if "locationMessage" in names or "liveLocationMessage" in names:
        loc = message.locationMessage if "locationMessage" in names else message.liveLocationMessage
        parts = [f"{loc.degreesLatitude},{loc.degreesLongitude}"]
        for extra in ("name", "address"):
            value = getattr(loc, extra, "")
            if value:
                parts.append(value)
        return "location", " ".join(parts), None
    if "contactMessage" in names:
        contact = message.contactMessage
        return "contact", contact.vcard or contact.displayName or None, None
    if "contactsArrayMessage" in names:
        contacts = message.contactsArrayMessage
        return "contact", "\n".join(c.vcard for c in contacts.contacts) or None, None
    if "reactionMessage" in names:
        return "reaction", message.reactionMessage.text or None, None
    return "unknown", None, None


RECEIPT_STATUS = {1: "delivered", 4: "read", 6: "played"}  # neonize ReceiptType


# ---- the host ---------------------------------------------------------------------


@dataclass
class Session:
    sid: str
    device_id: str
    jid: str | None
    client: Any = None
    thread: threading.Thread | None = None
    state: str = "connecting"  # connecting | qr | connected
    settled: threading.Event = field(default_factory=threading.Event)
    closing: bool = False  # we asked it to stop: no more status events
    terminal_sent: bool = False
    qr_count: int = 0
    pending: int = 0  # emissions waiting on the lane (keeps events in order)
    lock: threading.RLock = field(default_factory=threading.RLock)


class Lane:
    """One thread through which every call into Go passes, one at a time."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[str, Callable[[], None]] | None] = queue.Queue()
        self.busy_since: float | None = None
        self.job_name: str | None = None
        self._thread = threading.Thread(target=self._run, name="neonize-lane", daemon=True)
        self._thread.start()

    def submit(self, name: str, job: Callable[[], None]) -> None:
        self._jobs.put((name, job))

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            name, job = item
            self.job_name, self.busy_since = name, time.monotonic()
            try:
                job()
            except Exception:
                log.exception("lane job %s failed", name)
            finally:
                self.busy_since, self.job_name = None, None


class Host:
    def __init__(self, out: IO[bytes], dsn: str) -> None:
        self.out = out
        self.dsn = dsn
        self.write_lock = threading.Lock()
        self.lane = Lane()
        self.sessions: dict[str, Session] = {}  # by sid
        self.hooks = os.environ.get(HOOKS_ENV) == "1"
        self.settle_timeout = float(os.environ.get("CLARIN_NEONIZE_SETTLE_TIMEOUT", "8"))
        self.proxy = os.environ.get("CLARIN_NEONIZE_PROXY") or None
        self.os_name = os.environ.get("CLARIN_NEONIZE_OS_NAME", "Clarin")
        import neonize.events as nev
        import neonize.utils as nutils
        from neonize.client import ClientFactory, NewClient
        from neonize.proto.Neonize_pb2 import JID
        from neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps

        self.nev = nev
        self.nutils = nutils
        self.NewClient = NewClient
        self.ClientFactory = ClientFactory
        self.JID = JID
        self.DeviceProps = DeviceProps

    # ---- output ----

    def send(self, payload: dict[str, Any]) -> None:
        line = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
        with self.write_lock:
            self.out.write(line)
            self.out.flush()

    def reply(self, rid: int, result: Any = None) -> None:
        self.send({"id": rid, "ok": True, "result": result})

    def fail(self, rid: int, message: str, code: str = "driver_error") -> None:
        self.send({"id": rid, "ok": False, "error": message, "code": code})

    def emit(self, session: Session, ev: str, **data: Any) -> None:
        self.send({"ev": ev, "sid": session.sid, "device_id": session.device_id, **data})

    def ordered(self, session: Session, name: str, job: Callable[[], None], lane: bool) -> None:
        """Run ``job`` (which emits) after every earlier emission of ``session``:
        at once when nothing waits on the lane and it needs no call into Go,
        else behind the lane's earlier jobs."""
        with session.lock:
            if not lane and session.pending == 0:
                job()
                return
            session.pending += 1

        def run() -> None:
            try:
                job()
            finally:
                with session.lock:
                    session.pending -= 1

        self.lane.submit(name, run)

    def status(self, session: Session, status: str, *, terminal: bool = False, **data: Any) -> None:
        with session.lock:
            if session.closing or session.terminal_sent:
                return
            if terminal:
                session.terminal_sent = True
        self.emit(session, "status", status=status, **data)

    # ---- requests ----

    def handle(self, request: dict[str, Any]) -> None:
        rid = int(request.get("id", 0))
        op = str(request.get("op", ""))
        if op == "ping":
            busy = self.lane.busy_since
            self.reply(
                rid,
                {
                    "busy_for": None if busy is None else time.monotonic() - busy,
                    "job": self.lane.job_name,
                    "sessions": len(self.sessions),
                },
            )
            return
        handler = getattr(self, f"op_{op}", None)
        if handler is None or (op.startswith("debug_") and not self.hooks):
            self.fail(rid, f"unknown operation {op!r}", code="bad_request")
            return

        def job() -> None:
            try:
                self.reply(rid, handler(request))
            except HostError as exc:
                self.fail(rid, str(exc), exc.code)
            except Exception as exc:
                log.exception("operation %s failed", op)
                self.fail(rid, f"{type(exc).__name__}: {exc}", code="driver_error")

        self.lane.submit(op, job)

    def session(self, request: dict[str, Any]) -> Session:
        session = self.sessions.get(str(request.get("sid")))
        if session is None or session.closing:
            raise HostError("The device is not connected", code="device_not_connected")
        return session

    def connected(self, request: dict[str, Any]) -> Session:
        session = self.session(request)
        if session.state != "connected":
            raise HostError("The device is not connected", code="device_not_connected")
        return session

    def to_jid(self, value: str) -> Any:
        user, server = split_jid(value)
        device = 0
        if ":" in user:
            user, _, dev = user.partition(":")
            device = int(dev) if dev.isdigit() else 0
        return self.JID(User=user, Server=server, Device=device, RawAgent=0, Integrator=0)

    def op_init_store(self, request: dict[str, Any]) -> dict[str, Any]:
        # opening the store creates the whatsmeow_* tables (this leaks one pool:
        # the parent counts it against this process)
        devices = self.ClientFactory.get_all_devices_from_db(self.dsn)
        return {"devices": len(devices)}

    def op_connect(self, request: dict[str, Any]) -> dict[str, Any]:
        sid = str(request["sid"])
        device_id = str(request["device_id"])
        jid = request.get("jid")
        session = Session(sid=sid, device_id=device_id, jid=jid)
        props = self.DeviceProps(os=self.os_name, platformType=self.DeviceProps.SAFARI)
        if jid:
            # the parent checked that this JID is in the store: one missing
            # there aborts the process inside Go
            user, server = split_jid(jid)
            store_jid = self.nutils.build_jid(user, server)
            client = self.NewClient(self.dsn, jid=store_jid, props=props)
        else:
            client = self.NewClient(self.dsn, props=props, uuid=device_id, new_device=True)
        session.client = client
        self.subscribe(session, client)
        self.sessions[sid] = session
        thread = threading.Thread(
            target=self.run_session, args=(session,), name=f"session-{device_id}", daemon=True
        )
        session.thread = thread
        thread.start()
        # hold the lane until Go is past its map writes for this client
        session.settled.wait(self.settle_timeout)
        return {"settled": session.settled.is_set()}

    def run_session(self, session: Session) -> None:
        error: str | None = None
        try:
            if self.proxy:
                from neonize._binder import ProxySettings

                session.client.connect(ProxySettings(proxy_address=self.proxy))
            else:
                session.client.connect()
        except Exception as exc:
            error = str(exc) or type(exc).__name__
        session.settled.set()
        self.sessions.pop(session.sid, None)
        if error is None:
            error = "The WhatsApp connection ended"
        if session.state == "qr" and error == "The WhatsApp connection ended":
            error = "The QR code was not scanned in time"

        def finish() -> None:
            self.status(session, "disconnected", terminal=True, error=error)
            self.emit(session, "ended")

        self.ordered(session, "ended", finish, lane=False)

    def stop_session(self, session: Session) -> None:
        """Stop the client and wait for its connect to return (on the lane: a stop
        that never returns is what the parent's watchdog kills this process for)."""
        session.client.stop()
        if session.thread is not None:
            session.thread.join()

    def op_disconnect(self, request: dict[str, Any]) -> None:
        session = self.sessions.get(str(request.get("sid")))
        if session is None:
            return
        session.closing = True
        self.stop_session(session)

    def op_logout(self, request: dict[str, Any]) -> dict[str, Any]:
        session = self.sessions.get(str(request.get("sid")))
        if session is None:
            return {"unlinked": False}
        session.closing = True
        unlinked = False
        if session.state == "connected":
            try:
                session.client.logout()
                unlinked = True
            except Exception as exc:
                log.warning("logout of %s failed: %s", session.device_id, exc)
        self.stop_session(session)
        return {"unlinked": unlinked}

    def op_send_text(self, request: dict[str, Any]) -> dict[str, Any]:
        session = self.connected(request)
        response = session.client.send_message(self.to_jid(request["to"]), request["body"])
        return self.sent(response)

    def op_send_media(self, request: dict[str, Any]) -> dict[str, Any]:
        session = self.connected(request)
        to = self.to_jid(request["to"])
        data = base64.b64decode(request["data"])
        kind = request["media_type"]
        caption = request.get("caption") or None
        client = session.client
        if kind == "image":
            response = client.send_image(to, data, caption=caption)
        elif kind == "video":
            response = client.send_video(to, data, caption=caption)
        elif kind == "audio":
            ptt = str(request.get("mime_type", "")).startswith("audio/ogg")
            response = client.send_audio(to, data, ptt=ptt)
        elif kind == "document":
            response = client.send_document(
                to,
                data,
                caption=caption,
                filename=request.get("file_name"),
                mimetype=request.get("mime_type"),
            )
        else:
            raise HostError(f"Sending {kind} messages is not supported", code="unsupported_media")
        return self.sent(response)

    def sent(self, response: Any) -> dict[str, Any]:
        return {"wa_message_id": response.ID, "sent_at": proto_time(response.Timestamp).isoformat()}

    def op_mark_read(self, request: dict[str, Any]) -> None:
        session = self.connected(request)
        chat = self.to_jid(request["chat"])
        sender = self.to_jid(request.get("sender") or request["chat"])
        session.client.mark_read(
            *request["ids"], chat=chat, sender=sender, receipt=self.nutils.ReceiptType.READ
        )

    def op_pair_phone(self, request: dict[str, Any]) -> dict[str, Any]:
        session = self.session(request)
        if session.state == "connected":
            raise HostError("The device is already linked to a number", code="already_paired")
        if session.state != "qr":
            # PairPhone needs the socket that brings the QR codes
            raise HostError("The device is not connected", code="device_not_connected")
        from neonize.exc import PairPhoneError

        try:
            code = session.client.PairPhone(request["phone"], True)
        except PairPhoneError as exc:
            raise HostError(f"Pairing failed: {exc}", code="pairing_failed") from exc
        return {"code": code}

    # test hooks (only with CLARIN_NEONIZE_TEST_HOOKS=1)

    def op_debug_sleep(self, request: dict[str, Any]) -> None:
        time.sleep(float(request.get("seconds", 3600)))

    def op_debug_connect_unchecked(self, request: dict[str, Any]) -> dict[str, Any]:
        """A connect whose JID the parent did not check (one missing from the
        store makes Go dereference nil and abort the process)."""
        return self.op_connect(request)

    def op_debug_race(self, request: dict[str, Any]) -> None:
        """Break the one rule (one call into Go at a time) to see the process die:
        clients connect on many threads while another reads ``is_connected``."""
        # a throwaway sqlite store: the race is on Go's maps, and each attempt
        # on the PostgreSQL store would leak a connection
        store = os.path.join(tempfile.mkdtemp(prefix="neonize-race-"), "race.db")
        clients = [
            self.NewClient(store, uuid=f"race-{i}", new_device=True)
            for i in range(int(request.get("clients", 40)))
        ]
        deadline = time.monotonic() + float(request.get("seconds", 10))

        def connect(client: Any) -> None:
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    client.connect()

        def poll() -> None:
            while time.monotonic() < deadline:
                for client in clients:
                    _ = client.is_connected

        threads = [threading.Thread(target=connect, args=(c,), daemon=True) for c in clients]
        threads.append(threading.Thread(target=poll, daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def op_debug_inject(self, request: dict[str, Any]) -> None:
        """Feed a session's handler an event built from JSON, as Go would."""
        from google.protobuf.json_format import ParseDict

        session = self.session(request)
        kind = request["event"]
        if kind == "qr":
            self.on_qr(session, str(request["code"]).encode())
            return
        event = ParseDict(request.get("fields", {}), getattr(self.nev, kind)())
        handler = session.client.event.list_func[self.nev.EVENT_TO_INT[getattr(self.nev, kind)]]
        # like Go, from another thread than the lane
        threading.Thread(target=handler, args=(session.client, event), daemon=True).start()

    # ---- events from Go (on Go's threads: never block them on the lane) ----

    def subscribe(self, session: Session, client: Any) -> None:
        nev = self.nev

        def bind(kind: Any, handler: Callable[[Session, Any], None]) -> None:
            def on_event(_client: Any, event: Any) -> None:
                session.settled.set()
                try:
                    handler(session, event)
                except Exception:
                    log.exception("handling %s for %s failed", kind.__name__, session.device_id)

            client.event(kind)(on_event)

        client.event.qr(lambda _c, data: self.on_qr(session, data))
        bind(nev.PairStatusEv, self.on_pair_status)
        bind(nev.ConnectedEv, self.on_connected)
        bind(nev.LoggedOutEv, self.on_logged_out)
        bind(nev.StreamReplacedEv, self.on_stream_replaced)
        bind(nev.TemporaryBanEv, self.on_temporary_ban)
        bind(nev.ConnectFailureEv, self.on_connect_failure)
        bind(nev.DisconnectedEv, self.on_disconnected)
        bind(nev.MessageEv, self.on_message)
        bind(nev.ReceiptEv, self.on_receipt)

    def on_qr(self, session: Session, data: bytes) -> None:
        session.settled.set()
        code = data.decode(errors="replace")
        first = session.qr_count == 0
        session.qr_count += 1
        session.state = "qr"
        expires_at = datetime.now(UTC) + timedelta(
            seconds=FIRST_QR_SECONDS if first else NEXT_QR_SECONDS
        )

        def job() -> None:
            if first:
                self.status(session, "qr_pending")
            if not session.closing:
                self.emit(session, "qr", code=code, expires_at=expires_at.isoformat())

        self.ordered(session, "qr", job, lane=False)

    def on_pair_status(self, session: Session, event: Any) -> None:
        if event.Status == 2:  # SUCCESS: Connected follows
            session.jid = self.nutils.Jid2String(event.ID)
            return
        error = event.Error or "pairing failed"
        self.end(session, "error", f"Pairing failed: {error}")

    def on_connected(self, session: Session, _event: Any) -> None:
        session.state = "connected"

        def job() -> None:
            jid = session.jid
            push_name = None
            try:
                me = session.client.get_me()
                if me.JID.User:
                    jid = self.nutils.Jid2String(me.JID)
                push_name = me.PushName or None
            except Exception as exc:
                log.warning("get_me for %s failed: %s", session.device_id, exc)
            session.jid = jid
            self.status(
                session,
                "connected",
                jid=jid,
                phone=phone_of(jid) if jid else None,
                push_name=push_name,
            )

        self.ordered(session, "connected", job, lane=True)

    def on_logged_out(self, session: Session, event: Any) -> None:
        self.end(session, "logged_out", "The device was unlinked from the phone")

    def on_stream_replaced(self, session: Session, _event: Any) -> None:
        self.end(session, "disconnected", "Another client connected with this session")

    def on_temporary_ban(self, session: Session, event: Any) -> None:
        expire = f" for {event.Expire} s" if event.Expire else ""
        self.end(session, "error", f"WhatsApp banned this number temporarily{expire}")

    def on_connect_failure(self, session: Session, event: Any) -> None:
        reason = event.Message or f"reason {event.Reason}"
        self.end(session, "error", f"WhatsApp refused the connection: {reason}")

    def on_disconnected(self, session: Session, _event: Any) -> None:
        error = "The QR code was not scanned in time" if session.state == "qr" else None
        self.end(session, "disconnected", error or "The WhatsApp connection dropped")

    def end(self, session: Session, status: str, error: str) -> None:
        """Report the end of a session and stop its client: no reconnect here,
        the worker owns retries (whatsmeow's own would race with them)."""
        jid = session.jid

        def job() -> None:
            self.status(session, status, terminal=True, error=error, jid=jid)

        self.ordered(session, status, job, lane=False)

        def stop() -> None:
            if self.sessions.get(session.sid) is session:
                self.stop_session(session)

        self.lane.submit("stop", stop)

    def on_message(self, session: Session, event: Any) -> None:
        info = event.Info
        message = unwrap(event.Message)
        kind = classify(message)
        if kind is None:
            return
        type_, body, media_field = kind
        source = info.MessageSource
        chat = normalize(self.nutils.Jid2String(source.Chat))
        sender = self.nutils.Jid2String(source.Sender) if source.Sender.User else None
        payload: dict[str, Any] = {
            "wa_message_id": info.ID,
            "chat_jid": chat,
            "sender_jid": normalize(sender) if sender else None,
            "push_name": info.Pushname or None,
            "direction": "out" if source.IsFromMe else "in",
            "type": type_,
            "body": body or (self.nutils.extract_text(message) or None),
            "is_group": bool(source.IsGroup),
            "sent_at": proto_time(info.Timestamp).isoformat(),
        }
        if media_field is None:
            self.ordered(
                session, "message", lambda: self.emit(session, "message", message=payload), False
            )
            return

        def job() -> None:
            media: dict[str, Any] | None = None
            sub = getattr(message, media_field)
            try:
                data = session.client.download_any(message)
                media = {
                    "data": base64.b64encode(data).decode(),
                    "mime_type": sub.mimetype or "application/octet-stream",
                    "file_name": getattr(sub, "fileName", "") or None,
                }
            except Exception as exc:
                # the message is kept without its bytes rather than lost
                log.warning("media download of %s failed: %s", info.ID, exc)
            self.emit(session, "message", message=payload, media=media)

        self.ordered(session, "download", job, lane=True)

    def on_receipt(self, session: Session, event: Any) -> None:
        status = RECEIPT_STATUS.get(int(event.Type))
        if status is None or not event.MessageIDs:
            return
        source = event.MessageSource
        payload = {
            "wa_message_ids": list(event.MessageIDs),
            "chat_jid": normalize(self.nutils.Jid2String(source.Chat)),
            "sender_jid": normalize(self.nutils.Jid2String(source.Sender))
            if source.Sender.User
            else None,
            "status": status,
            "receipt_at": proto_time(event.Timestamp).isoformat(),
        }
        self.ordered(
            session, "receipt", lambda: self.emit(session, "receipt", receipt=payload), False
        )


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _configure_logging() -> None:
    import neonize  # noqa: F401 - its import calls logging.basicConfig: configure after it

    from clarin_common.logging import configure_logging

    configure_logging(
        level=os.environ.get("CLARIN_LOG_LEVEL", "INFO"), json=True, service="neonize-host"
    )
    for name in ("neonize", "whatsmeow", "Whatsmeow"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(os.environ.get("CLARIN_NEONIZE_LOG_LEVEL", "WARNING"))


def main() -> None:
    _die_with_parent()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    dsn = os.environ["CLARIN_NEONIZE_STORE"]
    _configure_logging()
    host = Host(out, dsn)
    host.send({"ev": "ready", "pid": os.getpid()})
    for raw in sys.stdin.buffer:
        try:
            request = json.loads(raw)
        except ValueError:
            log.warning("unreadable request line")
            continue
        if request.get("op") == "shutdown":
            break
        host.handle(request)
    # The parent is gone or asked us to go: sessions end with the process (the
    # sockets close, the credentials stay in the store).
    out.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
