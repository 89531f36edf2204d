"""The auth service's errors (rendered by the common handler)."""

from __future__ import annotations

from clarin_common.errors import Conflict, Unauthorized


class EmailTaken(Conflict):
    code = "email_taken"
    message = "This email is already registered"


class InvalidRefreshToken(Unauthorized):
    code = "invalid_refresh_token"
    message = "Refresh token is invalid, expired or revoked"


class RefreshTokenReused(InvalidRefreshToken):
    code = "refresh_token_reused"
    message = "Refresh token was already used; the session has been revoked"
