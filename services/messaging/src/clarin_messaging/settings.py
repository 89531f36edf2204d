"""Settings of the messaging service (``MESSAGING_*`` on top of ``CLARIN_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from clarin_common.settings import CommonSettings


class MessagingSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="MESSAGING_", env_file=".env", extra="ignore", populate_by_name=True
    )

    service_name: str = "messaging"
    port: int = 8003
    # the devices service, asked whether a device belongs to the caller's account
    devices_url: str = "http://127.0.0.1:8002"
    devices_timeout: float = 5.0
    # the auth service, asked whether an assignee is a user of the caller's account
    auth_url: str = "http://127.0.0.1:8001"
    auth_timeout: float = 5.0
    max_upload_bytes: int = 16 * 1024 * 1024
    # an inbound file still downloading after this long may be retried (its
    # worker may have stopped mid-way)
    media_stale_seconds: float = Field(600.0, gt=0)
    # how long a send waits for the worker; on timeout the message stays pending
    # and the worker's `sent` event settles it
    command_timeout: float = 10.0
    mark_read_timeout: float = 3.0
    consumers_enabled: bool = True
    consumer_durable: str = "messaging"
    leads_consumer_durable: str = "messaging-leads"
    consumer_batch_size: int = 1000
    consumer_fetch_timeout: float = 0.5
    consumer_ack_wait: float = 30.0
    # batches handled at once: one in PostgreSQL while the next is parsed and the
    # previous one's events are published (transactions still go one at a time)
    consumer_overlap: int = 2
    # history sync after linking: how far back messages are imported, its own
    # consumer, and how many parts (each up to ~512 KiB of messages) one
    # transaction takes
    history_days: int = Field(30, ge=1)
    history_consumer_durable: str = "messaging-history"
    history_batch_parts: int = Field(8, ge=1)
