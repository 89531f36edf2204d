"""Settings shared by every service.

Common variables carry the ``CLARIN_`` prefix; a service subclasses
:class:`CommonSettings`, sets its own ``env_prefix`` (``AUTH_``, ``GATEWAY_``, …)
for its own fields and keeps reading the common ones under ``CLARIN_``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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


def common(name: str, default: Any, **kwargs: Any) -> Any:
    """A field read from ``CLARIN_<NAME>`` whatever the subclass's prefix is."""
    return Field(default, validation_alias=AliasChoices(f"CLARIN_{name.upper()}", name), **kwargs)


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLARIN_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    env: Environment = common("env", "dev")
    service_name: str = common("service_name", "clarin")
    database_url: str = common("database_url", DEV_DATABASE_URL)
    db_pool_min: int = common("db_pool_min", 1)
    db_pool_max: int = common("db_pool_max", 10)
    redis_url: str = common("redis_url", "redis://127.0.0.1:6379/0")
    nats_url: str = common("nats_url", "nats://127.0.0.1:4222")
    jwt_public_key: str = common("jwt_public_key", DEV_JWT_PUBLIC_KEY)
    jwt_issuer: str = common("jwt_issuer", "clarin")
    log_level: str = common("log_level", "INFO")
    log_json: bool | None = common("log_json", None)
    cors_origins: list[str] = common("cors_origins", ["http://localhost:3000"])
    media_dir: str = common("media_dir", "./var/media")
    host: str = common("host", "127.0.0.1")

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
