"""Session revocations: auth tells the gateways which access tokens no longer count.

Access tokens are verified without a database, so a token keeps working until
it expires. When auth ends a session (logout, a reused refresh token, a password
change) or all of a user's (disabled, removed, role changed), it publishes a
:class:`SessionRevoked` on ``auth.{account_id}.session_revoked`` (stream
``AUTH_EVENTS``). Every gateway replica reads the stream from the start (it
only keeps a day) and refuses the matching tokens on REST and WebSocket.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

AUTH_EVENTS_STREAM = "AUTH_EVENTS"
AUTH_EVENTS_SUBJECTS = "auth.>"
SESSION_REVOKED_SUBJECTS = "auth.*.session_revoked"
# longer than any access token lives (AUTH_ACCESS_TOKEN_TTL_SECONDS is at most a day)
AUTH_EVENTS_MAX_AGE_SECONDS = 24 * 3600

RevokeReason = Literal[
    "logout", "refresh_reused", "password_changed", "disabled", "removed", "role_changed"
]


def session_revoked_subject(account_id: str) -> str:
    if not account_id or any(c in account_id for c in ".*> \t\r\n"):
        raise ValueError(f"invalid account_id for a subject: {account_id!r}")
    return f"auth.{account_id}.session_revoked"


class SessionRevoked(BaseModel):
    """Access tokens of ``user_id`` that no longer count: those of the sessions in
    ``session_ids``, or, when it is null, every one issued before ``issued_before``."""

    user_id: str
    session_ids: list[str] | None = None
    issued_before: datetime
    reason: RevokeReason
