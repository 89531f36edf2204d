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


if __name__ == "__main__":
    main(TestHost)
