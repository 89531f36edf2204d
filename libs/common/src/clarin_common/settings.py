"""Settings shared by every service.

Common variables carry the ``CLARIN_`` prefix; a service subclasses
:class:`CommonSettings`, sets its own ``env_prefix`` (``AUTH_``, ``GATEWAY_``, …)
for its own fields and keeps reading every field under ``CLARIN_`` too (its own
prefix wins: ``AUTH_DATABASE_URL`` beats ``CLARIN_DATABASE_URL``).

Values come from the environment, then from ``.env`` in the working directory.
``CLARIN_ENV_FILE`` in the environment names another file instead, or none when
empty (the test plugin sets it empty: a developer's ``.env`` never leaks into a
test run).
"""

from __future__ import annotations

import os
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
# where settings come from, so not a setting itself
ENV_FILE_VARIABLE = "CLARIN_ENV_FILE"

Environment = Literal["dev", "test", "prod", "staging"]


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLARIN_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    env: Environment = Field(
        "dev",
        description="`dev`, `test`, `staging` or `prod`; outside dev/test the dev keys are refused",
    )
    service_name: str = Field(
        "clarin",
        description="the name in logs and metrics; set per process, never in a shared .env",
    )
    database_url: str = Field(
        DEV_DATABASE_URL, description="PostgreSQL; each service migrates its own schema at start-up"
    )
    db_pool_min: int = Field(1, description="PostgreSQL connections each process keeps open")
    db_pool_max: int = Field(10, description="PostgreSQL connections each process may open")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis (gateway rate limits)")
    nats_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS with JetStream; comma-separated for a cluster"
    )
    # the NATS credentials of this process's role (infra/nats/auth.conf), kept out
    # of the URL so that no log line that names the server shows a secret
    nats_user: str | None = Field(None, description="NATS user of this process's role")
    nats_password: SecretStr | None = Field(None, description="its password")
    jwt_public_key: str = Field(
        DEV_JWT_PUBLIC_KEY,
        description="Ed25519 public key (PEM) that access tokens are checked with",
    )
    jwt_issuer: str = Field("clarin", description="`iss` of the access tokens")
    log_level: str = Field("INFO", description="`DEBUG`, `INFO`, `WARNING` or `ERROR`")
    log_json: bool | None = Field(None, description="JSON log lines; unset: JSON unless `dev`")
    cors_origins: list[str] = Field(
        ["http://localhost:3000"], description="browser origins allowed to call the API (JSON list)"
    )
    media_dir: str = Field("./var/media", description="where messaging keeps media files")
    outbox_relay_interval: float = Field(
        5.0,
        gt=0,
        description="how often a service republishes the events its outbox still holds "
        "(a publish after commit failed)",
    )
    host: str = Field(
        "127.0.0.1", description="the address processes listen on (`0.0.0.0` in containers)"
    )

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
        # common CLARIN_ one, from the environment and then from .env (the same
        # file for both prefixes: `_env_file=None` reads none).
        env_file = getattr(dotenv_settings, "env_file", ".env")
        chosen = env_file == settings_cls.model_config.get("env_file")  # not `_env_file=`
        if chosen and ENV_FILE_VARIABLE in os.environ:
            env_file = os.environ[ENV_FILE_VARIABLE] or None
            dotenv_settings = DotEnvSettingsSource(settings_cls, env_file=env_file)
        return (
            init_settings,
            env_settings,
            EnvSettingsSource(settings_cls, env_prefix="CLARIN_"),
            dotenv_settings,
            DotEnvSettingsSource(settings_cls, env_file=env_file, env_prefix="CLARIN_"),
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
