"""Settings shared by every service.

Common variables carry the ``CLARIN_`` prefix; a service subclasses
:class:`CommonSettings`, sets its own ``env_prefix`` (``AUTH_``, ``GATEWAY_``, …)
for its own fields and keeps reading every field under ``CLARIN_`` too (its own
prefix wins: ``AUTH_DATABASE_URL`` beats ``CLARIN_DATABASE_URL``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

# The development key pair. It is committed on purpose so that `make run` works
# on a fresh clone; settings refuse it outside dev/test.
DEV_JWT_PRIVATE_KEY = """-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIBKhv/tFpDB6vtvf4BOgCH++WyrtyDSqzh8O38pnwAUD
-----END PRIVATE KEY-----
"""
DEV_JWT_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAtnjRpNme3gudZgvF98d301Of0l6NeDiXIywgIteS8kw=
-----END PUBLIC KEY-----
"""
DEV_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/clarin"

Environment = Literal["dev", "test", "prod", "staging"]


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLARIN_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    env: Environment = Field("dev")
    service_name: str = Field("clarin")
    database_url: str = Field(DEV_DATABASE_URL)
    db_pool_min: int = Field(1)
    db_pool_max: int = Field(10)
    redis_url: str = Field("redis://127.0.0.1:6379/0")
    nats_url: str = Field("nats://127.0.0.1:4222")
    # NATS credentials of this process's role (infra/nats/nats.conf): kept out of
    # the URL so that no log line that names the server shows a secret
    nats_user: str | None = Field(None)
    nats_password: SecretStr | None = Field(None)
    jwt_public_key: str = Field(DEV_JWT_PUBLIC_KEY)
    jwt_issuer: str = Field("clarin")
    log_level: str = Field("INFO")
    log_json: bool | None = Field(None)
    cors_origins: list[str] = Field(["http://localhost:3000"])
    media_dir: str = Field("./var/media")
    host: str = Field("127.0.0.1")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # A service's own prefix first (AUTH_DATABASE_URL may override), then the
        # common CLARIN_ one, from the environment and then from .env.
        return (
            init_settings,
            env_settings,
            EnvSettingsSource(settings_cls, env_prefix="CLARIN_"),
            dotenv_settings,
            DotEnvSettingsSource(settings_cls, env_prefix="CLARIN_"),
            file_secret_settings,
        )

    @property
    def is_local(self) -> bool:
        return self.env in ("dev", "test")

    @property
    def json_logs(self) -> bool:
        return self.log_json if self.log_json is not None else self.env != "dev"

    @model_validator(mode="after")
    def _refuse_dev_secrets(self) -> CommonSettings:
        if self.is_local:
            return self
        for name, value in self._secrets().items():
            if value in _DEV_SECRETS:
                raise ValueError(
                    f"{name} is the development default; set a real value when "
                    f"CLARIN_ENV={self.env}"
                )
        return self

    def _secrets(self) -> dict[str, str]:
        """Values that must not keep their development default outside dev/test."""
        return {"CLARIN_JWT_PUBLIC_KEY": self.jwt_public_key}


_DEV_SECRETS = {DEV_JWT_PRIVATE_KEY, DEV_JWT_PUBLIC_KEY}
