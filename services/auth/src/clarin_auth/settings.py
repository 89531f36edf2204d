"""Settings of the auth service (prefix ``AUTH_``; common ones under ``CLARIN_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from clarin_common.settings import DEV_JWT_PRIVATE_KEY, CommonSettings


class AuthSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUTH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    service_name: str = "auth"
    port: int = 8001
    # Ed25519 private key (PEM); the only key in the system that signs tokens.
    jwt_private_key: str = DEV_JWT_PRIVATE_KEY
    access_token_ttl_seconds: int = Field(900, ge=30, le=24 * 3600)
    # each refresh token lives this long unless used (a session idle longer ends)
    refresh_token_ttl_seconds: int = Field(30 * 24 * 3600, ge=60)
    # a session (refresh-token family) ends this long after login, however often it
    # is refreshed
    session_max_age_seconds: int = Field(30 * 24 * 3600, ge=60)
    bcrypt_rounds: int = Field(12, ge=4, le=31)

    def _secrets(self) -> dict[str, str]:
        return {**super()._secrets(), "AUTH_JWT_PRIVATE_KEY": self.jwt_private_key}
