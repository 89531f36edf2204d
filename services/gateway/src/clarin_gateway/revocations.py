"""Access tokens that no longer count, learned from auth's ``session_revoked`` events.

Every replica reads stream ``AUTH_EVENTS`` from its start with an ordered
consumer (the stream keeps a day, longer than any access token lives), so a
replica started after a revocation knows it too. A revoked token answers 401
``token_revoked`` on REST, and the sockets opened with one are closed with 4401.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

from clarin_common.auth import Principal
from clarin_common.auth_events import (
    AUTH_EVENTS_MAX_AGE_SECONDS,
    AUTH_EVENTS_STREAM,
    SESSION_REVOKED_SUBJECTS,
    SessionRevoked,
)
from clarin_common.events import RawEnvelope
from clarin_gateway.exceptions import TokenRevoked

log = structlog.get_logger(__name__)


def issued_before_cutoff(event: SessionRevoked) -> int:
    """Tokens with an ``iat`` (whole seconds) below this no longer count.

    A disabled or removed user gets no new token, so every token of the
    revocation's second goes too. After a role change the client fetches a fresh
    token at once: one issued in the same second as the change must stay valid.
    """
    second = int(event.issued_before.timestamp())
    return second + 1 if event.reason in ("disabled", "removed") else second


class RevocationList:
    def __init__(self, retention_seconds: float = AUTH_EVENTS_MAX_AGE_SECONDS) -> None:
        self.retention = retention_seconds
        # user id → tokens issued before this second (epoch) no longer count
        self._users: dict[str, int] = {}
        # session id → when it was revoked (for pruning)
        self._sessions: dict[str, float] = {}
        self._pruned_at = time.monotonic()

    def add(self, event: SessionRevoked) -> None:
        if event.session_ids is None:
            before = issued_before_cutoff(event)
            self._users[event.user_id] = max(self._users.get(event.user_id, 0), before)
        else:
            now = time.time()
            for session_id in event.session_ids:
                self._sessions[session_id] = now
        self._prune()

    def is_revoked(self, user_id: str, session_id: str | None, issued_at: int) -> bool:
        before = self._users.get(user_id)
        if before is not None and issued_at < before:
            return True
        return session_id is not None and session_id in self._sessions

    def check(self, principal: Principal) -> None:
        if self.is_revoked(principal.user_id, principal.session_id, principal.issued_at):
            raise TokenRevoked()

    def _prune(self) -> None:
        if time.monotonic() - self._pruned_at < 60:
            return
        self._pruned_at = time.monotonic()
        oldest = time.time() - self.retention
        self._users = {u: t for u, t in self._users.items() if t >= oldest}
        self._sessions = {s: t for s, t in self._sessions.items() if t >= oldest}


OnRevoked = Callable[[str, SessionRevoked], Awaitable[None]]


async def follow(
    js: JetStreamContext,
    revoked: RevocationList,
    on_revoked: OnRevoked,
    catch_up_timeout: float = 10.0,
) -> JetStreamContext.PushSubscription:
    """Subscribe to every revocation of the last day and those to come; returns once
    the ones already in the stream are known (or after ``catch_up_timeout``)."""
    info = await js.stream_info(AUTH_EVENTS_STREAM)
    last_seq = info.state.last_seq if info.state.messages else 0
    caught_up = asyncio.Event()
    if last_seq == 0:
        caught_up.set()

    async def on_msg(msg: Msg) -> None:
        try:
            if msg.metadata.sequence.stream >= last_seq:
                caught_up.set()
        except Exception:  # not a JetStream message: nothing to count
            caught_up.set()
        try:
            envelope = RawEnvelope.model_validate_json(msg.data)
            event = SessionRevoked.model_validate(envelope.data)
        except ValidationError:
            log.warning("bad_revocation_event", subject=msg.subject)
            return
        if msg.subject != f"auth.{envelope.account_id}.session_revoked":
            log.warning("revocation_account_mismatch", subject=msg.subject)
            return
        revoked.add(event)
        await on_revoked(envelope.account_id, event)

    sub = await js.subscribe(
        SESSION_REVOKED_SUBJECTS,
        stream=AUTH_EVENTS_STREAM,
        cb=on_msg,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    try:
        await asyncio.wait_for(caught_up.wait(), catch_up_timeout)
    except TimeoutError:
        log.warning("revocations_catch_up_timed_out", last_seq=last_seq)
    return sub
