"""Tell the gateways (NATS, stream AUTH_EVENTS) which sessions ended.

The announcement is staged in the outbox in the transaction that revokes the
refresh tokens and published after it commits (relayed if that fails), so a
gateway learns of every ended session and closes its sockets and access tokens.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from clarin_common.auth_events import RevokeReason, SessionRevoked, session_revoked_subject
from clarin_common.events import Envelope
from clarin_common.outbox import PendingEvent, stage_events


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


async def stage_revocations(
    conn: asyncpg.Connection, revocations: Sequence[Revocation]
) -> list[PendingEvent]:
    """Stage the announcements inside the transaction that revokes the tokens (a
    revocation of no session announces nothing)."""
    events = []
    for revocation in revocations:
        if revocation.session_ids is not None and not revocation.session_ids:
            continue
        envelope: Envelope[SessionRevoked] = Envelope(
            id=str(uuid.uuid4()),
            type="session_revoked",
            account_id=revocation.account_id,
            data=revocation.event(),
        )
        events.append((session_revoked_subject(revocation.account_id), envelope))
    return await stage_events(conn, events)
