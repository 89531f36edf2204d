"""Settings of the webhooks service (``WEBHOOKS_*`` on top of the common ``CLARIN_*``)."""

from __future__ import annotations

from pydantic import field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from clarin_common.settings import CommonSettings

# The development key that encrypts webhook secrets at rest. Committed so that
# `make run` works on a fresh clone; refused outside dev/test like the JWT keys.
DEV_SECRET_KEY = "g-bt4UroSXOZJtwefaWpPkNSC5GC-4TC6avdksW2-3I="


class WebhooksSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="WEBHOOKS_", env_file=".env", extra="ignore", populate_by_name=True
    )

    service_name: str = "webhooks"
    port: int = 8005

    # Fernet keys (urlsafe base64 of 32 bytes), comma-separated: the first one
    # encrypts new secrets, every one decrypts (so a key can be rotated in).
    secret_key: str = DEV_SECRET_KEY

    # None: allowed in dev/test only. When allowed, http:// and private, loopback
    # or link-local targets are accepted (a receiver on this machine).
    allow_private_targets: bool | None = None

    # webhooks an account may have (each event fans out to every one of them)
    max_per_account: int = 20

    # one delivery attempt: connect + send + first byte of the answer
    delivery_timeout_seconds: float = 10.0
    # retries: first after ~base, doubling up to max_interval, ±jitter, until
    # window seconds after the event was first scheduled
    retry_base_seconds: float = 10.0
    retry_max_interval_seconds: float = 3600.0
    retry_jitter: float = 0.2
    retry_window_seconds: float = 24 * 3600.0

    # deliveries in flight per process, and per webhook within that
    max_in_flight: int = 256
    max_in_flight_per_webhook: int = 64
    # how long a claimed delivery stays claimed before another replica may take
    # it (a process that died mid-attempt); longer than one attempt
    claim_seconds: float = 60.0
    # how often due retries are looked for when nothing wakes the dispatcher
    poll_interval_seconds: float = 1.0
    consumer_batch_size: int = 500
    # delivered and failed deliveries are kept this long in the log
    retention_days: float = 7.0

    @field_validator("secret_key")
    @classmethod
    def _valid_keys(cls, value: str) -> str:
        from clarin_webhooks.crypto import SecretBox

        SecretBox(value)  # raises ValueError naming the bad key
        return value

    @field_validator("allow_private_targets", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("retry_jitter")
    @classmethod
    def _jitter_fraction(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError("a fraction between 0 and 1")
        return value

    @property
    def private_targets_allowed(self) -> bool:
        if self.allow_private_targets is None:
            return self.is_local
        return self.allow_private_targets

    @model_validator(mode="after")
    def _refuse_dev_key(self) -> WebhooksSettings:
        if not self.is_local and DEV_SECRET_KEY in self.keys():
            raise ValueError(
                "WEBHOOKS_SECRET_KEY holds the development key; set a real one "
                f"(a Fernet key) when CLARIN_ENV={self.env}"
            )
        return self

    def keys(self) -> list[str]:
        return [k.strip() for k in self.secret_key.split(",") if k.strip()]
