"""The errors of signing in (rendered by the common handler)."""

from __future__ import annotations

from clarin_common.errors import Forbidden, Unauthorized, ValidationFailed


class InvalidRefreshToken(Unauthorized):
    code = "invalid_refresh_token"
    message = "Refresh token is invalid, expired or revoked"


class RefreshTokenReused(InvalidRefreshToken):
    code = "refresh_token_reused"
    message = "Refresh token was already used; the session has been revoked"


class UserDisabled(Forbidden):
    code = "user_disabled"
    message = "This user has been disabled by an admin of the account"


class WrongPassword(ValidationFailed):
    code = "wrong_password"
    message = "The current password is wrong"

    def __init__(self) -> None:
        super().__init__(
            details=[
                {
                    "loc": ["body", "current_password"],
                    "msg": "The current password is wrong",
                    "type": "wrong_password",
                }
            ]
        )
