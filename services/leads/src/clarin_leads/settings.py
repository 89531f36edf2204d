"""Settings of the leads service (``LEADS_*`` on top of the common ``CLARIN_*``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from clarin_common.settings import CommonSettings


class LeadsSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="LEADS_", env_file=".env", extra="ignore", populate_by_name=True
    )

    service_name: str = "leads"
    port: int = 8004
    # the auth service answers which users belong to the caller's account
    auth_url: str = "http://127.0.0.1:8001"
    auth_timeout: float = 5.0
    consumer_batch_size: int = 500
    # a later WhatsApp message announces lead_updated (last_contact_at) at most this often
    contact_event_interval_seconds: float = 60.0
