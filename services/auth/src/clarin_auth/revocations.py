"""Tell the gateways (NATS, stream AUTH_EVENTS) which sessions ended.

Published after the change committed. The refresh tokens are already revoked in
the database then; a lost announcement only leaves the access tokens working
until they expire (as before these events existed), so it is logged, not retried.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from nats.js import JetStreamContext

from clarin_common.auth_events import RevokeReason, SessionRevoked, session_revoked_subject
from clarin_common.events import Envelope

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Revocation:
    account_id: str
    user_id: str
    reason: RevokeReason
    # None: every session of the user (tokens issued before ``at``)
    session_ids: list[str] | None = None
    at: datetime | None = None

    def event(self) -> SessionRevoked:
        return SessionRevoked(
            user_id=self.user_id,
            session_ids=self.session_ids,
            issued_before=self.at or datetime.now(UTC),
            reason=self.reason,
        )


class Revocations:
    def __init__(self, js: JetStreamContext | None) -> None:
        self.js = js

    async def announce(self, revocation: Revocation) -> None:
        if revocation.session_ids is not None and not revocation.session_ids:
            return
        if self.js is None:
            log.warning("session_revocation_not_announced", reason="no NATS connection")
            return
        envelope: Envelope[SessionRevoked] = Envelope(
            id=str(uuid.uuid4()),
            type="session_revoked",
            account_id=revocation.account_id,
            data=revocation.event(),
        )
        try:
            await self.js.publish(
                session_revoked_subject(revocation.account_id),
                envelope.model_dump_json().encode(),
                headers={"Nats-Msg-Id": envelope.id},
            )
        except Exception as exc:
            log.error(
                "session_revocation_not_announced",
                user_id=revocation.user_id,
                reason=revocation.reason,
                error=repr(exc),
            )
