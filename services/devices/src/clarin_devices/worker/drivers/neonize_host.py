"""A child process of the device worker that holds neonize sessions.

Run as ``python -m clarin_devices.worker.drivers.neonize_host``; spoken to by
:mod:`.neonize_pool` over JSON lines:

* parent → child on stdin: ``{"id": n, "op": ..., ...}`` requests, and
  ``{"op": "shutdown"}``;
* child → parent on a private copy of stdout: ``{"id": n, "ok": true, "result": ...}``
  / ``{"id": n, "ok": false, "error": ..., "code": ...}`` replies, and events
  ``{"ev": "status" | "qr" | "message" | "receipt" | "reaction" | "edit" | "revoke" |
  "presence" | "history" | "ended" | "ready", "sid": ...}``.

Why a process: neonize's Go side keeps global maps without locks and aborts the
whole process on a concurrent write; its calls can hang for good; every connect
attempt leaks a database pool. Here every call into Go goes through one thread
(the *lane*), so that no two of them overlap — a connect holds the lane until it
has settled (its first event, its failure, or ``settle_timeout``). Whatever still
goes wrong costs this process only.

What keeps Go calls on the lane (read in neonize 0.5.2's source):

* neonize registers ``weakref.finalize(client, Stop, uuid)``: it would call Go
  from whatever thread collects the client. The finalizer is detached and
  ``Stop`` is only ever called by :meth:`Host.release` on the lane.
* neonize keys its Go maps by ``uuid``, which is ``jid.User`` on a resume: two
  clients of one number in one process would share (and stop) each other's
  entries. Every client here gets a uuid of its own (the session id).
* a job queued for a session (``GetMe`` after ``Connected``, a LID lookup) runs
  only while its client was not stopped: Go dereferences nil for a stopped one.

History sync blobs (possibly tens of thousands of messages) are mapped on a
thread of their own (:class:`HistoryImport`), never on the lane nor on Go's
callback thread, and sent to the parent in batches; once no blob has come for
``history_quiet`` seconds one last (empty) batch says the import is over.

Media are not downloaded here: a message with a file is reported at once with
``media_info`` and the worker fetches the file itself (:mod:`.neonize_media`),
so no file crosses this pipe and no download holds the lane.

Go writes to file descriptor 1 (``fmt.Println``), so the protocol uses a
duplicate of it and fd 1 is pointed at stderr before anything else runs.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import queue
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from clarin_devices.worker.drivers.neonize_mapping import (
    HISTORY_WITH_MESSAGES,
    HistoryMapper,
    chat_presence_payload,
    classify,
    edit_payload,
    event_kind,
    jid_string,
    json_bound,
    lid_lookups,
    message_payload,
    phone_of,
    presence_lookups,
    presence_payload,
    reaction_payload,
    receipt_payload,
    revoke_payload,
    unwrap,
)

FIRST_QR_SECONDS = 60  # whatsmeow shows the first code for 60 s, the next ones for 20 s
NEXT_QR_SECONDS = 20
SHUTDOWN_DRAIN_SECONDS = 1.0  # a shutdown waits this long for the lane's jobs to answer
HISTORY_LINE_BYTES = 2 * 1024 * 1024  # a history batch's JSON, at most (the pipe takes 4 MiB)
QR_EXPIRED = "qr_expired"  # the error of a pairing that ended without a scan

log = logging.getLogger("clarin.neonize_host")


class HostError(Exception):
    def __init__(self, message: str, code: str = "driver_error") -> None:
        super().__init__(message)
        self.code = code


def split_jid(jid: str) -> tuple[str, str]:
    """``user[:device]@server`` → (``user[:device]``, ``server``) as neonize's
    ``ClientFactory.get_all_devices_from_db`` builds store JIDs."""
    user, sep, server = jid.strip().partition("@")
    if not sep or not user or not server:
        raise HostError(f"not a JID: {jid!r}", code="invalid_jid")
    return user, server


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
    stopped: bool = False  # Go's Stop ran (on the lane): no Go call for it any more
    returned: threading.Event = field(default_factory=threading.Event)  # connect() returned
    # stopped while its dial may hang (Go's Stop would wait for the dial's lock
    # and hold the lane): Stop runs once the dial is over, whichever way
    abandoned: bool = False
    terminal_sent: bool = False
    qr_count: int = 0
    # history sync: the mapper of this session's blobs (names and LIDs it
    # learnt), the import under way and its batches so far, and when the last
    # blob came (monotonic)
    history: HistoryMapper | None = None
    history_sync: str | None = None  # the id of the import under way
    history_batches: int = 0
    history_at: float | None = None
    # contacts whose online/away (Presence) WhatsApp was asked for
    presence_of: set[str] = field(default_factory=set)
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

    def drain(self, timeout: float) -> bool:
        """Wait until the jobs submitted so far ran (at most ``timeout``)."""
        done = threading.Event()
        self.submit("drain", done.set)
        return done.wait(timeout)

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
    # operations that move files (their lane job is named "transfer:…"): the
    # parent lets them run past its hang timeout while bytes keep moving
    TRANSFER_OPS: frozenset[str] = frozenset({"send_media"})

    def __init__(self, out: IO[bytes], dsn: str) -> None:
        self.out = out
        self.dsn = dsn
        self.write_lock = threading.Lock()
        self.lane = Lane()
        self.sessions: dict[str, Session] = {}  # by sid, while connect() runs
        # every client until Go's Stop ran for it on the lane: Go calls back
        # into its ctypes callbacks, which must not be collected before that
        self.clients: dict[str, Session] = {}
        self.settle_timeout = float(os.environ.get("CLARIN_NEONIZE_SETTLE_TIMEOUT", "8"))
        self.proxy = os.environ.get("CLARIN_NEONIZE_PROXY") or None
        self.os_name = os.environ.get("CLARIN_NEONIZE_OS_NAME", "Clarin")
        self.mark_online = os.environ.get("CLARIN_NEONIZE_MARK_ONLINE", "1") == "1"
        self.history_days = float(os.environ.get("CLARIN_NEONIZE_HISTORY_DAYS", "30"))
        self.history_quiet = float(os.environ.get("CLARIN_NEONIZE_HISTORY_QUIET", "20"))
        self.history_batch = int(os.environ.get("CLARIN_NEONIZE_HISTORY_BATCH", "500"))
        self.history_import = HistoryImport(self)
        self.first_qr_seconds: float = FIRST_QR_SECONDS
        self.next_qr_seconds: float = NEXT_QR_SECONDS
        import neonize.events as nev
        import neonize.utils as nutils
        from neonize.client import ChatSettingsStore, ClientFactory, ContactStore, NewClient
        from neonize.proto.Neonize_pb2 import JID
        from neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps

        self.nev = nev
        self.nutils = nutils
        self.NewClient = NewClient
        self.ClientFactory = ClientFactory
        self.ContactStore = ContactStore
        self.ChatSettingsStore = ChatSettingsStore
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
        if handler is None:
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

        self.lane.submit(f"transfer:{op}" if op in self.TRANSFER_OPS else op, job)

    def session(self, request: dict[str, Any]) -> Session:
        session = self.sessions.get(str(request.get("sid")))
        if session is None or session.closing or session.stopped:
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

    def new_client(self, session: Session) -> Any:
        # what a pairing tells the phone (neonize merges it into whatsmeow's
        # defaults): among it how many days of history to send (3650 there)
        props = self.DeviceProps(
            os=self.os_name,
            platformType=self.DeviceProps.SAFARI,
            historySyncConfig=self.DeviceProps.HistorySyncConfig(
                fullSyncDaysLimit=max(1, math.ceil(self.history_days))
            ),
        )
        if session.jid:
            # the parent checked that this JID is in the store: one missing
            # there aborts the process inside Go
            user, server = split_jid(session.jid)
            store_jid = self.nutils.build_jid(user, server)
            client = self.NewClient(self.dsn, jid=store_jid, props=props)
        else:
            client = self.NewClient(self.dsn, props=props, new_device=True)
        # Go calls only on the lane: no finalizer calling Stop from the thread
        # that happens to collect the client (release() stops it instead) ...
        client._stop_finalizer.detach()
        # ... and a Go identity of its own, never the number's (resuming a
        # number twice in a process would share, and stop, one map entry)
        client.uuid = f"clarin-{session.sid}".encode()
        client.contact = self.ContactStore(client.uuid)
        client.chat_settings = self.ChatSettingsStore(client.uuid)
        # whatsmeow's QR channel ends with a login status ("timeout" when the
        # codes ran out, "success", "err-…"); neonize only prints it
        client._NewClient__onLoginStatus = lambda _uuid, status: self.on_login_status(
            session, ctypes.string_at(status).decode(errors="replace") if status else ""
        )
        return client

    def op_connect(self, request: dict[str, Any]) -> dict[str, Any]:
        session = Session(
            sid=str(request["sid"]), device_id=str(request["device_id"]), jid=request.get("jid")
        )
        session.client = self.new_client(session)
        self.subscribe(session, session.client)
        self.sessions[session.sid] = session
        self.clients[session.sid] = session
        thread = threading.Thread(
            target=self.run_session,
            args=(session,),
            name=f"session-{session.device_id}",
            daemon=True,
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
        session.returned.set()
        session.settled.set()
        self.sessions.pop(session.sid, None)
        if error is None:
            error = "The WhatsApp connection ended"
        # Go still holds the client in its maps unless Stop ran: free them
        self.lane.submit("release", lambda: self.release(session))

        def finish() -> None:
            # "returned": this process may serve another session (a pairing
            # whose connect returned by itself did not leave whatsmeow's QR
            # loop behind)
            self.status(session, "disconnected", terminal=True, error=error, returned=True)
            self.emit(session, "ended")

        self.ordered(session, "ended", finish, lane=False)

    def release(self, session: Session) -> None:
        """Go's ``Stop`` for a client, once (on the lane)."""
        if not session.stopped:
            session.stopped = True
            session.client.stop()
        if session.returned.is_set():
            self.clients.pop(session.sid, None)

    def stop_session(self, session: Session) -> None:
        """Stop the client and wait for its connect to return (on the lane)."""
        session.closing = True
        if session.state == "connecting" and not session.returned.is_set():
            # no word from WhatsApp yet: the dial may hang, and Stop with it
            # (whatsmeow's Disconnect waits for the dial's lock). Stop it once
            # the dial is over (its first event, or connect() returning).
            session.abandoned = True
            self.sessions.pop(session.sid, None)
            return
        self.release(session)
        if session.state == "qr":
            # whatsmeow's QR loop never returns once stopped (nor after the
            # codes ran out): nothing to wait for. Pairing happens in a child
            # of its own, which the parent ends.
            self.sessions.pop(session.sid, None)
            return
        if session.thread is not None:
            session.thread.join()
        self.clients.pop(session.sid, None)

    def op_disconnect(self, request: dict[str, Any]) -> None:
        session = self.sessions.get(str(request.get("sid")))
        if session is None:
            return
        self.stop_session(session)

    def op_logout(self, request: dict[str, Any]) -> dict[str, Any]:
        session = self.sessions.get(str(request.get("sid")))
        if session is None:
            return {"unlinked": False, "error": "The session had ended"}
        session.closing = True
        unlinked, error = False, None
        if session.state == "connected" and not session.stopped:
            try:
                session.client.logout()
                unlinked = True
            except Exception as exc:
                error = str(exc) or type(exc).__name__
                log.warning("logout of %s failed: %s", session.device_id, error)
        else:
            error = "The session was not connected to WhatsApp"
        self.stop_session(session)
        return {"unlinked": unlinked, "error": error}

    def op_send_text(self, request: dict[str, Any]) -> dict[str, Any]:
        """A text; with ``quoted`` a reply that quotes that message (neonize's
        ``build_reply_message``: ``contextInfo`` with its id, author and text)."""
        session = self.connected(request)
        to = self.to_jid(request["to"])
        quoted = self.quoted(session, request.get("quoted"), request["to"])
        if quoted is None:
            response = session.client.send_message(to, request["body"])
        else:
            reply = session.client.build_reply_message(request["body"], quoted)
            response = session.client.send_message(to, reply)
        return self.sent(response)

    def quoted(self, session: Session, quote: Any, chat: str) -> Any:
        """The neonize ``Message`` (event) of a message to quote, built from what
        we stored: ``{wa_message_id, sender_jid, from_me, body}``."""
        if not quote:
            return None
        from neonize.proto.Neonize_pb2 import Message as EventMessage
        from neonize.proto.Neonize_pb2 import MessageInfo, MessageSource
        from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

        from_me = bool(quote.get("from_me"))
        author = session.jid if from_me else (quote.get("sender_jid") or chat)
        if not author:
            raise HostError("The quoted message has no known author", code="invalid_reply")
        return EventMessage(
            Info=MessageInfo(
                ID=str(quote["wa_message_id"]),
                MessageSource=MessageSource(
                    Chat=self.to_jid(chat), Sender=self.to_jid(author), IsFromMe=from_me
                ),
            ),
            Message=Message(conversation=str(quote.get("body") or "")),
        )

    def target_author(self, session: Session, request: dict[str, Any]) -> Any:
        """The JID of who wrote the target message of a reaction or revoke: we
        (``from_me``) or the contact (``sender``, in a group its participant)."""
        if request.get("from_me"):
            if not session.jid:
                raise HostError("The device has no known number", code="device_not_connected")
            return self.to_jid(session.jid)
        return self.to_jid(request.get("sender") or request["chat"])

    def op_react(self, request: dict[str, Any]) -> dict[str, Any]:
        """React to a message (``emoji`` empty takes our reaction back)."""
        session = self.connected(request)
        chat = self.to_jid(request["chat"])
        reaction = session.client.build_reaction(
            chat,
            self.target_author(session, request),
            str(request["target"]),
            str(request.get("emoji") or ""),
        )
        return self.sent(session.client.send_message(chat, reaction))

    def op_edit(self, request: dict[str, Any]) -> dict[str, Any]:
        """Replace the text of one of our messages (neonize's ``build_edit``)."""
        from neonize.builder import build_edit
        from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

        session = self.connected(request)
        chat = self.to_jid(request["chat"])
        edit = build_edit(chat, str(request["target"]), Message(conversation=str(request["body"])))
        return self.sent(session.client.send_message(chat, edit))

    def op_revoke(self, request: dict[str, Any]) -> dict[str, Any]:
        """Delete one of our messages for everyone (neonize's ``build_revoke``,
        with our JID as known here: no ``GetMe`` call into Go)."""
        from neonize.builder import build_revoke

        session = self.connected(request)
        if not session.jid:
            raise HostError("The device has no known number", code="device_not_connected")
        chat = self.to_jid(request["chat"])
        me = self.to_jid(session.jid)
        revoke = build_revoke(
            chat, self.target_author(session, request), str(request["target"]), me
        )
        return self.sent(session.client.send_message(chat, revoke))

    def op_typing(self, request: dict[str, Any]) -> None:
        """Show (``composing``) or stop showing (``paused``) us typing in a chat."""
        from neonize.utils.enum import ChatPresence, ChatPresenceMedia

        session = self.connected(request)
        state = {
            "composing": ChatPresence.CHAT_PRESENCE_COMPOSING,
            "paused": ChatPresence.CHAT_PRESENCE_PAUSED,
        }.get(str(request.get("state")))
        if state is None:
            raise HostError("state must be composing or paused", code="bad_request")
        chat = self.to_jid(request["chat"])
        session.client.send_chat_presence(chat, state, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT)
        key = f"{chat.User}@{chat.Server}"
        if chat.Server in ("s.whatsapp.net", "lid") and key not in session.presence_of:
            # an agent typing has the chat open: WhatsApp sends a contact's
            # online/away only to who asked for it (as WhatsApp Web does then)
            session.presence_of.add(key)
            try:
                session.client.subscribe_presence(chat)
            except Exception as exc:
                log.info("presence of %s not available: %s", key, exc)

    def op_send_media(self, request: dict[str, Any]) -> dict[str, Any]:
        """Upload and send a file the parent wrote to ``path`` (files never
        travel through this pipe)."""
        session = self.connected(request)
        to = self.to_jid(request["to"])
        path = str(request["path"])
        kind = request["media_type"]
        caption = request.get("caption") or None
        quoted = self.quoted(session, request.get("quoted"), request["to"])
        client = session.client
        if kind == "image":
            response = client.send_image(to, path, caption=caption, quoted=quoted)
        elif kind == "video":
            response = client.send_video(to, path, caption=caption, quoted=quoted)
        elif kind == "audio":
            ptt = str(request.get("mime_type", "")).startswith("audio/ogg")
            response = client.send_audio(to, path, ptt=ptt, quoted=quoted)
        elif kind == "document":
            response = client.send_document(
                to,
                path,
                caption=caption,
                filename=request.get("file_name"),
                mimetype=request.get("mime_type"),
                quoted=quoted,
            )
        else:
            raise HostError(f"Sending {kind} messages is not supported", code="unsupported_media")
        return self.sent(response)

    def sent(self, response: Any) -> dict[str, Any]:
        from clarin_devices.worker.drivers.neonize_mapping import proto_time

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

    # ---- events from Go (on Go's threads: never block them on the lane) ----

    def subscribe(self, session: Session, client: Any) -> None:
        nev = self.nev

        def bind(kind: Any, handler: Callable[[Session, Any], None]) -> None:
            def on_event(_client: Any, event: Any) -> None:
                session.settled.set()
                if session.abandoned:
                    # the dial of a session we stopped is over: Stop it now
                    self.lane.submit("release", lambda: self.release(session))
                    return
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
        bind(nev.ClientOutdatedEv, self.on_client_outdated)
        bind(nev.DisconnectedEv, self.on_disconnected)
        bind(nev.MessageEv, self.on_message)
        bind(nev.ReceiptEv, self.on_receipt)
        bind(nev.ChatPresenceEv, self.on_chat_presence)
        bind(nev.PresenceEv, self.on_presence)
        bind(nev.HistorySyncEv, self.on_history_sync)

    def on_qr(self, session: Session, data: bytes) -> None:
        session.settled.set()
        if session.abandoned:
            self.lane.submit("release", lambda: self.release(session))
            return
        code = data.decode(errors="replace")
        first = session.qr_count == 0
        session.qr_count += 1
        session.state = "qr"
        expires_at = datetime.now(UTC) + timedelta(
            seconds=self.first_qr_seconds if first else self.next_qr_seconds
        )

        def job() -> None:
            if first:
                self.status(session, "qr_pending")
            if not session.closing:
                self.emit(session, "qr", code=code, expires_at=expires_at.isoformat())

        self.ordered(session, "qr", job, lane=False)

    def on_login_status(self, session: Session, status: str) -> None:
        """The end of whatsmeow's QR channel. After "timeout" whatsmeow has
        disconnected by itself without a Disconnected event, and neonize keeps
        waiting for an id that never comes: this is the only word of it."""
        session.settled.set()
        if status == "success":
            return  # PairStatus and Connected follow
        if status == "timeout":
            self.status(session, "disconnected", terminal=True, error=QR_EXPIRED)
        elif status == "err-client-outdated":
            self.status(
                session,
                "error",
                terminal=True,
                error="WhatsApp refused this client version: neonize needs an update",
            )
        elif status:
            self.status(session, "error", terminal=True, error=f"Pairing failed: {status}")

    def on_pair_status(self, session: Session, event: Any) -> None:
        if event.Status == 2:  # SUCCESS: Connected follows
            session.jid = jid_string(event.ID) or session.jid
            return
        error = event.Error or "pairing failed"
        self.end(session, "error", f"Pairing failed: {error}")

    def on_connected(self, session: Session, _event: Any) -> None:
        session.state = "connected"

        def job() -> None:
            jid = session.jid
            push_name = None
            if session.stopped or session.closing:
                return  # GetMe of a stopped client dereferences nil in Go
            try:
                me = session.client.get_me()
                jid = jid_string(me.JID) or jid
                push_name = me.PushName or None
            except Exception as exc:
                log.warning("get_me for %s failed: %s", session.device_id, exc)
            session.jid = jid
            if self.mark_online:
                # WhatsApp sends typing (ChatPresence) only to a client that
                # says it is online; the phone then holds back its notifications
                try:
                    from neonize.utils.enum import Presence

                    session.client.send_presence(Presence.AVAILABLE)
                except Exception as exc:
                    log.info("marking %s online failed: %s", session.device_id, exc)
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

    def on_client_outdated(self, session: Session, _event: Any) -> None:
        self.end(session, "error", "WhatsApp refused this client version: neonize needs an update")

    def on_disconnected(self, session: Session, _event: Any) -> None:
        if session.state == "qr":
            self.end(session, "disconnected", QR_EXPIRED)
        else:
            self.end(session, "disconnected", "The WhatsApp connection dropped")

    def end(self, session: Session, status: str, error: str) -> None:
        """Report the end of a session and stop its client: no reconnect here,
        the worker owns retries (whatsmeow's own would race with them)."""
        jid = session.jid

        def job() -> None:
            self.status(session, status, terminal=True, error=error, jid=jid)

        self.ordered(session, status, job, lane=False)

        def stop() -> None:
            if self.sessions.get(session.sid) is session and not session.closing:
                self.stop_session(session)

        self.lane.submit("stop", stop)

    def lookup(self, session: Session, needed: bool) -> Callable[[str], str | None]:
        """The store's LID → phone map, for a job on the lane."""

        def lookup(lid: str) -> str | None:
            # on the lane, and only for a client Go still holds
            if not needed or session.stopped:
                return None
            try:
                found = session.client.get_pn_from_lid(self.to_jid(lid))
            except Exception as exc:
                log.info("no phone number stored for %s: %s", lid, exc)
                return None
            return jid_string(found)

        return lookup

    def on_message(self, session: Session, event: Any) -> None:
        """A message, or what a phone sends about one: a reaction, an edit, a
        delete for everyone (each an event of its own kind)."""
        info = event.Info
        message = unwrap(event.Message)
        kind = event_kind(message)
        if kind is None:
            return
        needs_lookup = bool(lid_lookups(info))
        lookup = self.lookup(session, needs_lookup)

        def job() -> None:
            if kind == "message":
                shown = classify(message)
                assert shown is not None
                payload = message_payload(info, message, shown, lookup, own=session.jid)
            elif kind == "reaction":
                payload = reaction_payload(info, message, lookup)
            elif kind == "edit":
                payload = edit_payload(info, message, lookup)
            else:
                payload = revoke_payload(info, message, lookup)
            if payload is not None:  # None: a status post, not a conversation
                self.emit(session, kind, **{kind: payload})

        self.ordered(session, kind, job, lane=needs_lookup)

    def on_chat_presence(self, session: Session, event: Any) -> None:
        """A contact typing, recording or stopping, in one chat."""
        needs_lookup = bool(presence_lookups(event))
        lookup = self.lookup(session, needs_lookup)

        def job() -> None:
            payload = chat_presence_payload(event, lookup)
            if payload is not None:
                self.emit(session, "presence", presence=payload)

        self.ordered(session, "presence", job, lane=needs_lookup)

    def on_presence(self, session: Session, event: Any) -> None:
        """A contact came online or went offline."""
        needs_lookup = bool(presence_lookups(event))
        lookup = self.lookup(session, needs_lookup)

        def job() -> None:
            payload = presence_payload(event, lookup)
            if payload is not None:
                self.emit(session, "presence", presence=payload)

        self.ordered(session, "presence", job, lane=needs_lookup)

    def on_history_sync(self, session: Session, event: Any) -> None:
        """A history blob: mapped off the lane and off Go's thread."""
        self.history_import.add(session, event.Data)

    def on_receipt(self, session: Session, event: Any) -> None:
        payload = receipt_payload(event)
        if payload is None:
            return
        self.ordered(
            session, "receipt", lambda: self.emit(session, "receipt", receipt=payload), False
        )


class HistoryImport:
    """One thread that maps the history blobs of every session of this process
    and sends them on in batches of ``history_batch`` messages. Live events
    never wait for it: it holds neither the lane nor Go's callback thread."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.jobs: queue.Queue[tuple[Session, Any]] = queue.Queue()
        self.active: dict[str, Session] = {}  # sessions with an import under way
        self.thread = threading.Thread(target=self.run, name="neonize-history", daemon=True)
        self.thread.start()

    def add(self, session: Session, data: Any) -> None:
        session.history_at = time.monotonic()
        self.jobs.put((session, data))

    def run(self) -> None:
        while True:
            try:
                session, data = self.jobs.get(timeout=min(1.0, self.host.history_quiet / 4))
            except queue.Empty:
                pass
            else:
                try:
                    self.process(session, data)
                except Exception:
                    log.exception("history import of %s failed", session.device_id)
            self.finish_quiet()

    def process(self, session: Session, data: Any) -> None:
        if session.closing or session.stopped:
            return
        if session.history is None:
            since = datetime.now(UTC) - timedelta(days=self.host.history_days)
            session.history = HistoryMapper(since=since, own=session.jid)
        conversations = session.history.conversations(data)
        if int(data.syncType) in HISTORY_WITH_MESSAGES and session.history_sync is None:
            session.history_sync = uuid.uuid4().hex
            session.history_batches = 0
            self.active[session.sid] = session
        progress = int(data.progress) if data.HasField("progress") else None
        chats: dict[str, dict[str, Any]] = {}
        batch: list[dict[str, Any]] = []
        size = 0
        for chat, messages in conversations:
            for message in messages:
                bound = json_bound(message)
                if batch and size + bound > HISTORY_LINE_BYTES:
                    # the parent reads lines of at most 4 MiB (a longer one
                    # costs this process): long texts make smaller batches
                    self.send(session, chats, batch, progress)
                    chats, batch, size = {}, [], 0
                chats[chat["chat_jid"]] = chat
                batch.append(message)
                size += bound
                if len(batch) >= self.host.history_batch:
                    self.send(session, chats, batch, progress)
                    chats, batch, size = {}, [], 0
        if batch:
            self.send(session, chats, batch, progress)
        session.history_at = time.monotonic()

    def send(
        self,
        session: Session,
        chats: dict[str, dict[str, Any]],
        batch: list[dict[str, Any]],
        progress: int | None = None,
        last: bool = False,
    ) -> None:
        if session.closing or session.history_sync is None:
            return
        self.host.emit(
            session,
            "history",
            history={
                "sync_id": session.history_sync,
                "batch": session.history_batches,
                "last": last,
                "progress": progress,
                "chats": list(chats.values()),
                "messages": batch,
            },
        )
        session.history_batches += 1

    def finish_quiet(self) -> None:
        """One last batch per import, once no blob came for ``history_quiet``."""
        now = time.monotonic()
        for sid, session in list(self.active.items()):
            if session.closing or session.stopped:
                del self.active[sid]
                continue
            if (
                session.history_at is not None
                and now - session.history_at < self.host.history_quiet
            ):
                continue
            if not self.jobs.empty():
                continue
            del self.active[sid]
            self.send(session, {}, [], last=True)
            session.history_sync = None


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


def main(host_class: type[Host] = Host) -> None:
    _die_with_parent()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    dsn = os.environ["CLARIN_NEONIZE_STORE"]
    _configure_logging()
    host = host_class(out, dsn)
    host.send({"ev": "ready", "pid": os.getpid()})
    for raw in sys.stdin.buffer:
        try:
            request = json.loads(raw)
        except ValueError:
            log.warning("unreadable request line")
            continue
        if request.get("op") == "shutdown":
            # what was asked before answers first (a pairing child is shut down
            # the moment its QR ends, maybe with a request still on the lane);
            # a lane stuck in Go does not hold the exit up for long
            host.lane.drain(SHUTDOWN_DRAIN_SECONDS)
            break
        host.handle(request)
    # The parent is gone or asked us to go: sessions end with the process (the
    # sockets close, the credentials stay in the store).
    out.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
