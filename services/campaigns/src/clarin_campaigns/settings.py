"""Settings of the campaigns service (``CAMPAIGNS_*`` on top of the common ``CLARIN_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from clarin_common.settings import CommonSettings


class CampaignsSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="CAMPAIGNS_", env_file=".env", extra="ignore", populate_by_name=True
    )

    service_name: str = "campaigns"
    port: int = 8006
    # the leads service resolves an audience, the devices service checks the device
    # (both asked with the caller's token)
    leads_url: str = "http://127.0.0.1:8004"
    devices_url: str = "http://127.0.0.1:8002"
    upstream_timeout: float = Field(10.0, gt=0)
    # pace of a campaign on its device when not given: messages a minute, ± jitter
    default_per_minute: int = Field(12, ge=1, le=60)
    jitter: float = Field(0.3, ge=0, le=0.9)  # ± fraction of the interval
    max_recipients: int = Field(10_000, ge=1)
    # how often the scheduler looks for a device whose next send is due
    tick_seconds: float = Field(0.2, gt=0)
    # campaign_progress: at most once per interval per campaign
    progress_interval_seconds: float = Field(1.0, ge=1.0)
    # how long a send request to messaging may take before it is tried again
    send_timeout_seconds: float = Field(5.0, gt=0)
    consumer_durable: str = "campaigns"
    consumer_batch_size: int = Field(500, ge=1)
