"""Per-account NATS subscriptions fanned out to that account's sockets.

An account is subscribed (core NATS, so every gateway replica sees every event)
while it has at least one socket on this replica, and unsubscribed when its last
socket leaves. Each socket has a bounded queue; one that cannot keep up is closed
with 1013 rather than slowing the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter, Gauge
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketState

from clarin_common.auth_events import SessionRevoked
from clarin_common.events import RawEnvelope, WaQr, ws_frame
from clarin_common.nats import confirm_subscriptions
from clarin_common.outage import NatsOutage
from clarin_gateway.revocations import issued_before_cutoff

log = structlog.get_logger(__name__)

SOCKETS = Gauge("clarin_gateway_ws_connections", "Open WebSocket connections")
SUBSCRIBED = Gauge("clarin_gateway_ws_accounts", "Accounts subscribed on NATS")
DROPPED = Counter("clarin_gateway_ws_slow_closed_total", "Sockets closed for not keeping up")
FRAMES = Counter("clarin_gateway_ws_frames_total", "Frames queued to sockets", ["type"])

CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_UNAUTHORIZED = 4401

PONG = json.dumps({"type": "pong"})


def app_subject(account_id: str) -> str:
    return f"app.{account_id}.>"


def qr_subject(account_id: str) -> str:
    return f"wa.evt.{account_id}.*.qr"


def _iso(envelope: RawEnvelope) -> str:
    return envelope.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def qr_frame(envelope: RawEnvelope) -> dict[str, object]:
    """A ``wa.evt.{account}.{device}.qr`` event as the ``qr_code`` frame of API.md."""
    qr = WaQr.model_validate(envelope.data)
    return {
        "type": "qr_code",
        "account_id": envelope.account_id,
        "data": {
            "device_id": envelope.device_id,
            "code": qr.code,
            "expires_at": qr.expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        },
        "ts": _iso(envelope),
    }


class Connection:
    """One browser socket: a bounded queue of frames and the tasks that serve it."""

    def __init__(
        self,
        websocket: WebSocket,
        account_id: str,
        queue_size: int,
        expires_at: float | None,
        *,
        user_id: str = "",
        session_id: str | None = None,
        issued_at: int = 0,
    ) -> None:
        self.websocket = websocket
        self.account_id = account_id
        self.expires_at = expires_at
        # whose token opened it: a revoked session or user closes it (4401)
        self.user_id = user_id
        self.session_id = session_id
        self.issued_at = issued_at
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.close_code: int | None = None
        self._killed = asyncio.Event()

    def offer(self, frame: str) -> bool:
        """Queue a frame; a full queue closes the socket (it is not keeping up)."""
        if self._killed.is_set():
            return False
        try:
            self.queue.put_nowait(frame)
            return True
        except asyncio.QueueFull:
            DROPPED.inc()
            log.warning("ws_slow_consumer_closed", account_id=self.account_id)
            self.kill(CLOSE_TRY_AGAIN_LATER)
            return False

    def kill(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code
        self._killed.set()

    async def run(self) -> int | None:
        """Serve the socket until the client leaves or the hub closes it; the close
        code to send, if any (the caller leaves the hub first, then closes)."""
        tasks = {
            asyncio.create_task(self._send_loop()),
            asyncio.create_task(self._receive_loop()),
            asyncio.create_task(self._killed.wait()),
        }
        if self.expires_at is not None:
            tasks.add(asyncio.create_task(self._expire()))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self.close_code

    async def close(self, code: int, timeout: float = 10.0) -> None:
        """Send the close frame; a client that does not read for ``timeout`` seconds
        (its buffers are full) is cut off without one."""
        if self.websocket.application_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.websocket.close(code=code), timeout)

    async def _send_loop(self) -> None:
        while True:
            frame = await self.queue.get()
            await self.websocket.send_text(frame)

    async def _receive_loop(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                continue
            try:
                parsed = json.loads(text)
            except ValueError:
                continue
            if isinstance(parsed, dict) and parsed.get("type") == "ping":
                self.offer(PONG)

    async def _expire(self) -> None:
        assert self.expires_at is not None
        await asyncio.sleep(max(0.0, self.expires_at - time.time()))
        self.kill(CLOSE_UNAUTHORIZED)


class Hub:
    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        # sockets refused while NATS is away: said once (nats_unavailable), not per socket
        self.outage = NatsOutage("gateway:hub")
        self._sockets: dict[str, set[Connection]] = {}
        self._subs: dict[str, list[Subscription]] = {}
        self._lock = asyncio.Lock()

    def subscribed_accounts(self) -> set[str]:
        return set(self._subs)

    def socket_count(self, account_id: str) -> int:
        return len(self._sockets.get(account_id, ()))

    def subscription_count(self) -> int:
        """NATS subscriptions held (two per subscribed account)."""
        return sum(len(subs) for subs in self._subs.values())

    async def join(self, conn: Connection) -> None:
        """Register a socket; the account's subscriptions are live on the server when
        this returns."""
        account_id = conn.account_id
        if not self.nc.is_connected:
            # fail fast (the client retries) rather than queue behind flush timeouts
            raise ConnectionError("NATS is not connected")
        async with self._lock:
            if account_id not in self._subs:
                subs: list[Subscription] = []
                try:
                    subs.append(
                        await self.nc.subscribe(
                            app_subject(account_id), cb=self._app_cb(account_id)
                        )
                    )
                    subs.append(
                        await self.nc.subscribe(qr_subject(account_id), cb=self._qr_cb(account_id))
                    )
                    await confirm_subscriptions(self.nc)
                except Exception:
                    for sub in subs:
                        with contextlib.suppress(Exception):
                            await sub.unsubscribe()
                    raise
                self._subs[account_id] = subs
                SUBSCRIBED.inc()
                log.debug("ws_account_subscribed", account_id=account_id)
            self._sockets.setdefault(account_id, set()).add(conn)
            SOCKETS.inc()

    async def leave(self, conn: Connection) -> None:
        account_id = conn.account_id
        async with self._lock:
            sockets = self._sockets.get(account_id)
            if sockets is None or conn not in sockets:
                return
            sockets.discard(conn)
            SOCKETS.dec()
            if sockets:
                return
            del self._sockets[account_id]
            for sub in self._subs.pop(account_id, []):
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            SUBSCRIBED.dec()
            log.debug("ws_account_unsubscribed", account_id=account_id)

    def revoke(self, account_id: str, event: SessionRevoked) -> int:
        """Close with 4401 the sockets whose token ``event`` revokes; how many."""
        closed = 0
        for conn in list(self._sockets.get(account_id, ())):
            if conn.user_id != event.user_id:
                continue
            if event.session_ids is None:
                hit = conn.issued_at < issued_before_cutoff(event)
            else:
                hit = conn.session_id is not None and conn.session_id in event.session_ids
            if hit:
                conn.kill(CLOSE_UNAUTHORIZED)
                closed += 1
        if closed:
            log.info("ws_sessions_revoked", account_id=account_id, sockets=closed)
        return closed

    async def close(self) -> None:
        """Shutdown: close every socket as "going away" and drop the subscriptions."""
        for sockets in list(self._sockets.values()):
            for conn in list(sockets):
                conn.kill(CLOSE_GOING_AWAY)

    def _fanout(self, account_id: str, frame_type: str, frame: str) -> None:
        for conn in list(self._sockets.get(account_id, ())):
            if conn.offer(frame):
                FRAMES.labels(frame_type).inc()

    def _parse(self, account_id: str, msg: Msg) -> RawEnvelope | None:
        try:
            envelope = RawEnvelope.model_validate_json(msg.data)
        except ValidationError:
            log.warning("ws_bad_event", subject=msg.subject)
            return None
        if envelope.account_id != account_id:
            # the subject says one account, the payload another: deliver to nobody
            log.warning("ws_event_account_mismatch", subject=msg.subject)
            return None
        return envelope

    def _app_cb(self, account_id: str) -> Callable[[Msg], Awaitable[None]]:
        async def on_app_event(msg: Msg) -> None:
            envelope = self._parse(account_id, msg)
            if envelope is not None:
                self._fanout(account_id, envelope.type, json.dumps(ws_frame(envelope)))

        return on_app_event

    def _qr_cb(self, account_id: str) -> Callable[[Msg], Awaitable[None]]:
        async def on_qr_event(msg: Msg) -> None:
            envelope = self._parse(account_id, msg)
            if envelope is None:
                return
            try:
                frame = qr_frame(envelope)
            except ValidationError:
                log.warning("ws_bad_qr_event", subject=msg.subject)
                return
            self._fanout(account_id, "qr_code", json.dumps(frame))

        return on_qr_event
