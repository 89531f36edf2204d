"""Per-account NATS subscriptions fanned out to that account's sockets.

An account is subscribed (core NATS, so every gateway replica sees every event)
while it has at least one socket on this replica, and unsubscribed when its last
socket leaves. Each socket has a bounded queue; one that cannot keep up is closed
with 1013 rather than slowing the others.

The hot path is one event to many sockets: an app event is turned into its frame
once (orjson, no model) and the same string goes to every socket of the
account. A socket that is idle sends it at once, on the hub's stack (no task
switch per socket); one that is busy (its previous send waits for a slow
client) queues it for its sender task, which sends everything queued when it
wakes. Metrics are counted once per event, not per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import orjson
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


def app_frame(account_id: str, payload: bytes) -> tuple[str, str] | None:
    """The frame of API.md for the bytes of an ``app.{account_id}.*`` event, encoded
    once: ``(type, frame)``; None for an event that is not an envelope of that
    account (logged). A well-formed envelope never goes through a model; anything
    else takes the model's way, which says what is wrong with it."""
    try:
        envelope = orjson.loads(payload)
        event_type = envelope["type"]
        data = envelope["data"]
        occurred_at = datetime.fromisoformat(envelope["occurred_at"])
        if not (
            isinstance(event_type, str)
            and isinstance(envelope["account_id"], str)
            and isinstance(envelope["id"], str)
            and isinstance(data, dict)
        ):
            raise TypeError("not an envelope")
    except (ValueError, TypeError, KeyError):
        return _app_frame_from_model(account_id, payload)
    if envelope["account_id"] != account_id:
        # the subject says one account, the payload another: deliver to nobody
        log.warning("ws_event_account_mismatch", account_id=account_id)
        return None
    ts = occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    frame = {"type": event_type, "account_id": account_id, "data": data, "ts": ts}
    return event_type, orjson.dumps(frame).decode()


def _app_frame_from_model(account_id: str, payload: bytes) -> tuple[str, str] | None:
    envelope = _parse_envelope(account_id, payload)
    if envelope is None:
        return None
    return envelope.type, json.dumps(ws_frame(envelope))


def _parse_envelope(account_id: str, payload: bytes) -> RawEnvelope | None:
    try:
        envelope = RawEnvelope.model_validate_json(payload)
    except ValidationError:
        log.warning("ws_bad_event", account_id=account_id)
        return None
    if envelope.account_id != account_id:
        # the subject says one account, the payload another: deliver to nobody
        log.warning("ws_event_account_mismatch", account_id=account_id)
        return None
    return envelope


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


async def _finish(coro: Coroutine[Any, Any, None], blocker: object) -> None:
    """Drive to its end a coroutine that was started by hand (``coro.send(None)``)
    and yielded ``blocker``: wait for what it waits on, then resume it, as a task
    would have."""
    try:
        while True:
            if isinstance(blocker, asyncio.Future):
                # what a task does with a future its coroutine yields (the flag
                # says "yielded by an await"): take it over and wait for it
                blocker._asyncio_future_blocking = False
                # its outcome is the coroutine's to see when it resumes
                with contextlib.suppress(Exception):
                    await blocker
            else:  # a bare yield (asyncio.sleep(0))
                await asyncio.sleep(0)
            try:
                blocker = coro.send(None)
            except StopIteration:
                return
    except BaseException:
        coro.close()
        raise


class Connection:
    """One browser socket: a bounded queue of frames and the tasks that serve it.

    A socket that has ``queue_size`` frames waiting when another comes (its client
    reads too slowly, or not at all) is closed with 1013; the frames it had not
    sent are dropped. The hub never waits for a socket: it writes to an idle one
    as far as that goes without waiting, and queues for a busy one."""

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
        self.queue_size = queue_size
        # frames waiting for the sender; the one being sent is no longer here
        self.pending: deque[str] = deque()
        self.close_code: int | None = None
        self._killed = asyncio.Event()
        self._dead = False
        # True while the sender task owns the socket (before the socket is
        # accepted, and while it sends): frames queue. False while it is idle:
        # offer sends at once, on the caller's stack.
        self._busy = True
        # a send started by offer that had to wait, for the sender to finish
        self._inflight: tuple[Coroutine[Any, Any, None], object] | None = None
        # set while the sender waits for work: offer wakes it
        self._wakeup: asyncio.Future[None] | None = None

    def offer(self, frame: str) -> bool:
        """Send or queue a frame; a full queue closes the socket (it is not keeping
        up). Never waits."""
        if self._dead:
            return False
        if self._busy:
            if len(self.pending) >= self.queue_size:
                DROPPED.inc()
                log.warning("ws_slow_consumer_closed", account_id=self.account_id)
                self.kill(CLOSE_TRY_AGAIN_LATER)
                return False
            self.pending.append(frame)
            return True
        # Idle: run the send right here until it would wait, as an eager task
        # would (Python 3.12's eager_task_factory; this is 3.11). A send to a
        # client that reads normally never waits: its bytes go to the transport
        # at once, with no task switch per socket. One that has to wait (the
        # client's TCP buffer is full) is handed to the sender task, and the
        # frames after it queue behind it.
        sending = self.websocket.send_text(frame)
        try:
            blocker = sending.send(None)
        except StopIteration:
            return True
        except Exception as exc:
            # the client is gone: end the socket as a failed send always did
            log.debug("ws_send_failed", account_id=self.account_id, error=repr(exc))
            self._gone()
            return False
        self._busy = True
        self._inflight = (sending, blocker)
        waiter, self._wakeup = self._wakeup, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def kill(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code
        self._gone()

    def _gone(self) -> None:
        self._dead = True
        self.pending.clear()
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
            # no more sends from offer while the caller leaves the hub and closes
            self._dead = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # a send offer started that the cancelled sender never took over
            inflight, self._inflight = self._inflight, None
            if inflight is not None:
                inflight[0].close()
        return self.close_code

    async def close(self, code: int, timeout: float = 10.0) -> None:
        """Send the close frame; a client that does not read for ``timeout`` seconds
        (its buffers are full) is cut off without one."""
        if self.websocket.application_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.websocket.close(code=code), timeout)

    async def _send_loop(self) -> None:
        # Owns the socket while it is busy: the send offer started and could not
        # finish, then everything queued meanwhile, one frame (one JSON object)
        # per WebSocket message as API.md says; then idle until offer needs it.
        pending = self.pending
        send_text = self.websocket.send_text
        loop = asyncio.get_running_loop()
        while True:
            inflight, self._inflight = self._inflight, None
            if inflight is not None:
                await _finish(*inflight)
            while pending:
                await send_text(pending.popleft())
            self._busy = False
            self._wakeup = loop.create_future()
            await self._wakeup

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
        self._frames_by_type: dict[str, Counter] = {}

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
        """The same frame to every socket of the account (offer never waits and never
        changes the set: a socket it closes leaves the hub from its own task)."""
        queued = 0
        for conn in self._sockets.get(account_id, ()):
            if conn.offer(frame):
                queued += 1
        if queued:
            counter = self._frames_by_type.get(frame_type)
            if counter is None:
                counter = self._frames_by_type[frame_type] = FRAMES.labels(frame_type)
            counter.inc(queued)

    def _app_cb(self, account_id: str) -> Callable[[Msg], Awaitable[None]]:
        async def on_app_event(msg: Msg) -> None:
            framed = app_frame(account_id, msg.data)
            if framed is not None:
                self._fanout(account_id, framed[0], framed[1])

        return on_app_event

    def _qr_cb(self, account_id: str) -> Callable[[Msg], Awaitable[None]]:
        async def on_qr_event(msg: Msg) -> None:
            envelope = _parse_envelope(account_id, msg.data)
            if envelope is None:
                return
            try:
                frame = qr_frame(envelope)
            except ValidationError:
                log.warning("ws_bad_qr_event", subject=msg.subject)
                return
            self._fanout(account_id, "qr_code", json.dumps(frame))

        return on_qr_event
