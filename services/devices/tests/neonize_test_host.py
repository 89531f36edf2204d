"""The neonize host with operations only tests use (never shipped in the host).

Started by the driver under test instead of ``python -m …neonize_host``
(``NeonizeConfig.host_command``). Its events are neonize's own protobuf objects
(``neonize.events.*``), built from JSON and fed to the host's real handlers from
another thread than the lane, as Go would.
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import threading
import time
from typing import Any

from clarin_devices.worker.drivers.neonize_host import Host, HostError, Session, main


class TestHost(Host):
    TRANSFER_OPS = frozenset({*Host.TRANSFER_OPS, "debug_transfer"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.every: dict[str, Session] = {}  # every session ever started, by sid
        self.captured: dict[str, list[dict[str, Any]]] = {}  # by sid (op_debug_capture)

    def op_connect(self, request: dict[str, Any]) -> dict[str, Any]:
        result = super().op_connect(request)
        session = self.sessions.get(str(request["sid"])) or self.clients.get(str(request["sid"]))
        if session is not None:
            self.every[session.sid] = session
        return result

    def any_session(self, request: dict[str, Any]) -> Session:
        session = self.every.get(str(request.get("sid")))
        if session is None:
            raise HostError("no such session", code="device_not_connected")
        return session

    def op_debug_sessions(self, request: dict[str, Any]) -> dict[str, str]:
        return {s.device_id: s.sid for s in self.every.values()}

    def op_debug_transfer(self, request: dict[str, Any]) -> None:
        """A long upload, as far as the process's I/O shows: bytes keep moving."""
        deadline = time.monotonic() + float(request.get("seconds", 3))
        chunk = b"\0" * 65536
        with open(os.devnull, "wb") as sink:
            while time.monotonic() < deadline:
                sink.write(chunk)
                sink.flush()
                time.sleep(0.01)

    def op_debug_sleep(self, request: dict[str, Any]) -> None:
        time.sleep(float(request.get("seconds", 3600)))

    def op_debug_connect_unchecked(self, request: dict[str, Any]) -> dict[str, Any]:
        """A connect whose JID the parent did not check (one missing from the
        store makes Go dereference nil and abort the process)."""
        return self.op_connect(request)

    def op_debug_clients(self, request: dict[str, Any]) -> dict[str, Any]:
        """Go identities of the live clients, and whether a finalizer could
        still call Go's Stop for one of them (after a collection)."""
        gc.collect()
        clients = [s.client for s in self.clients.values()]
        return {
            "uuids": [c.uuid.decode() for c in clients],
            "finalizers": [bool(c._stop_finalizer.alive) for c in clients],
        }

    def op_debug_qr_validity(self, request: dict[str, Any]) -> None:
        self.first_qr_seconds = float(request["first"])
        self.next_qr_seconds = float(request["next"])

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

    def op_debug_capture(self, request: dict[str, Any]) -> None:
        """Hold back what a session would hand to WhatsApp's socket (there is
        none here): neonize builds every message for real, ``send_message``,
        ``send_chat_presence`` and ``send_presence`` record it instead of
        sending, and answer like WhatsApp would (or raise neonize's error
        with ``fail``)."""
        from neonize.exc import SendMessageError
        from neonize.proto.Neonize_pb2 import SendResponse

        session = self.any_session(request)
        client = session.client
        fail = request.get("fail")
        sent: list[dict[str, Any]] = []
        self.captured[session.sid] = sent
        counter = iter(range(1, 1_000_000))

        def send_message(to: Any, message: Any, *args: Any, **kwargs: Any) -> Any:
            from google.protobuf.json_format import MessageToDict

            sent.append(
                {
                    "op": "send_message",
                    "to": to.User + "@" + to.Server,
                    "message": MessageToDict(message),
                }
            )
            if fail:
                raise SendMessageError(fail)
            return SendResponse(ID=f"3EB0SENT{next(counter)}", Timestamp=1700000100)

        def send_chat_presence(jid: Any, state: Any, media: Any) -> None:
            sent.append(
                {
                    "op": "send_chat_presence",
                    "to": jid.User + "@" + jid.Server,
                    "state": state.name,
                    "media": media.name,
                }
            )

        def send_presence(presence: Any) -> None:
            sent.append({"op": "send_presence", "presence": presence.name})

        def subscribe_presence(jid: Any) -> None:
            sent.append({"op": "subscribe_presence", "to": jid.User + "@" + jid.Server})

        client.send_message = send_message
        client.subscribe_presence = subscribe_presence
        client.send_chat_presence = send_chat_presence
        client.send_presence = send_presence

    def op_debug_device_props(self, request: dict[str, Any]) -> dict[str, Any]:
        """The DeviceProps a session's client hands to Go (sent to the phone at pairing)."""
        from google.protobuf.json_format import MessageToDict

        return dict(MessageToDict(self.any_session(request).client.device_props))

    def op_debug_captured(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"sent": list(self.captured.get(self.any_session(request).sid, []))}

    def op_debug_history(self, request: dict[str, Any]) -> None:
        """A HistorySync blob of ``chats`` by ``per_chat`` text messages, built
        directly (a JSON one that big would hold the lane while it parses), fed
        like Go does."""
        from neonize.proto.Neonize_pb2 import HistorySync as HistorySyncEv
        from neonize.proto.waHistorySync import WAWebProtobufsHistorySync_pb2 as hs

        session = self.any_session(request)
        data = synthetic_history(
            hs, int(request["chats"]), int(request["per_chat"]), prefix=str(request["prefix"])
        )
        event = HistorySyncEv(Data=data)
        handler = session.client.event.list_func[self.nev.EVENT_TO_INT[self.nev.HistorySyncEv]]
        threading.Thread(target=handler, args=(session.client, event), daemon=True).start()

    def op_debug_history_file(self, request: dict[str, Any]) -> None:
        """A serialized HistorySync blob from ``path``, decoded and handed to the
        session's handler on another thread, as neonize does with Go's bytes."""
        from neonize.proto.Neonize_pb2 import HistorySync as HistorySyncEv

        session = self.any_session(request)
        with open(str(request["path"]), "rb") as f:
            raw = f.read()
        handler = session.client.event.list_func[self.nev.EVENT_TO_INT[self.nev.HistorySyncEv]]

        def from_go() -> None:
            handler(session.client, HistorySyncEv.FromString(raw))

        threading.Thread(target=from_go, daemon=True).start()

    def op_debug_inject(self, request: dict[str, Any]) -> None:
        """Feed a session's handler an event built from JSON, as Go would."""
        from google.protobuf.json_format import ParseDict

        session = self.any_session(request)
        kind = request["event"]
        if kind == "qr":
            self.on_qr(session, str(request["code"]).encode())
            return
        if kind == "login_status":
            # what neonize's login-status callback carries when the QR channel ends
            self.on_login_status(session, str(request["status"]))
            return
        event = ParseDict(request.get("fields", {}), getattr(self.nev, kind)())
        handler = session.client.event.list_func[self.nev.EVENT_TO_INT[getattr(self.nev, kind)]]
        # like Go, from another thread than the lane
        threading.Thread(target=handler, args=(session.client, event), daemon=True).start()


def synthetic_history(hs: Any, chats: int, per_chat: int, prefix: str = "H") -> Any:
    """A RECENT HistorySync with ``chats`` one-to-one chats of ``per_chat``
    text messages each, one a minute up to now (also used by the bench)."""
    from neonize.proto.waCommon.WACommon_pb2 import MessageKey
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message
    from neonize.proto.waWeb.WAWebProtobufsWeb_pb2 import WebMessageInfo

    now = int(time.time())
    data = hs.HistorySync(syncType=hs.HistorySync.RECENT, progress=50)
    for c in range(chats):
        jid = f"52155{c:08d}@s.whatsapp.net"
        conv = data.conversations.add(ID=jid, name=f"Contacto {c}")
        for i in range(per_chat):
            conv.messages.add(
                msgOrderID=i,
                message=WebMessageInfo(
                    key=MessageKey(remoteJID=jid, fromMe=i % 3 == 0, ID=f"{prefix}{c}x{i}"),
                    messageTimestamp=now - (per_chat - i) * 60,
                    pushName=f"Contacto {c}",
                    message=Message(conversation=f"mensaje {i} del chat {c}"),
                ),
            )
    return data


if __name__ == "__main__":
    main(TestHost)
