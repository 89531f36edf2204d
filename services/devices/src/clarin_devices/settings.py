"""Settings of the devices API (prefix ``DEVICES_``) and of the device worker
(prefix ``WORKER_``); every field is also read under ``CLARIN_``."""

from __future__ import annotations

import os
import re
import socket
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from clarin_common.settings import CommonSettings


class DevicesSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="DEVICES_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    service_name: str = "devices"
    port: int = 8002
    # how long the API waits for the owning worker to answer a command
    command_timeout_seconds: float = Field(10.0, gt=0)
    # the workers' members bucket (WORKER_MEMBERS_BUCKET): a device whose holder's
    # heartbeat key is gone shows `connecting` (devices/holders.py)
    members_bucket: str = "device_workers"
    # how often the API compares the devices' holders with the live workers
    holder_check_interval_seconds: float = Field(1.0, gt=0)


def default_worker_id() -> str:
    raw = f"{socket.gethostname()}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)


class WorkerSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="WORKER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    service_name: str = "device-worker"
    worker_id: str = Field(
        default_factory=default_worker_id,
        pattern=r"^[A-Za-z0-9_-]+$",
        validation_alias=AliasChoices("WORKER_ID", "WORKER_WORKER_ID"),
    )
    port: int = 8101
    whatsapp_driver: Literal["simulator", "neonize"] = Field(
        "neonize",
        validation_alias=AliasChoices(
            "WORKER_WHATSAPP_DRIVER", "WHATSAPP_DRIVER", "CLARIN_WHATSAPP_DRIVER"
        ),
    )

    # membership: a heartbeat key per worker in a KV bucket whose entries expire
    members_bucket: str = "device_workers"
    heartbeat_interval_seconds: float = Field(2.0, gt=0)
    heartbeat_ttl_seconds: float = Field(6.0, gt=0)
    # a lease per connected device, renewed while held
    leases_bucket: str = "device_leases"
    lease_ttl_seconds: float = Field(15.0, gt=0)
    lease_renew_interval_seconds: float | None = Field(None, gt=0)  # default: ttl / 3
    reconcile_interval_seconds: float = Field(2.0, gt=0)
    # reconnects: exponential backoff with jitter; a batch of takeovers is spread
    reconnect_base_seconds: float = Field(1.0, gt=0)
    reconnect_max_seconds: float = Field(60.0, gt=0)
    reconnect_stagger_seconds: float = Field(5.0, ge=0)
    # outbound pacing per device (WhatsApp bans numbers that burst)
    send_rate_per_second: float = Field(1.0, ge=0)  # 0 turns pacing off
    send_jitter: float = Field(0.3, ge=0, le=1)  # ± fraction of the interval
    driver_call_timeout_seconds: float = Field(30.0, gt=0)
    # the durable send queue (WA_OUTBOX, see worker/outbound.py): a queued send
    # whose device stays unconnected this long fails with the reason
    send_disconnected_timeout_seconds: float = Field(600.0, gt=0)
    # a send taken by a worker that died goes back to the queue after this long
    outbox_ack_wait_seconds: float = Field(60.0, gt=0)
    # how long a finished send's id is remembered (a redelivery is not sent again)
    outbox_done_ttl_seconds: float = Field(7 * 24 * 3600.0, gt=0)
    # how often queues of devices no session holds are checked for that timeout
    outbox_sweep_interval_seconds: float = Field(30.0, gt=0)
    # inbound media: a file announced above this size is not downloaded (the
    # message says too_large); a download slower than the timeout fails, retryable
    media_max_bytes: int = Field(64 * 1024 * 1024, ge=1)
    media_download_timeout_seconds: float = Field(120.0, gt=0)

    # neonize driver: sessions grouped in child processes (see drivers/neonize_driver.py)
    neonize_sessions_per_child: int = Field(25, ge=1)
    # devices pairing (showing QR codes) at once, each in a process of its own
    neonize_pairing_children: int = Field(4, ge=1)
    neonize_max_attempts_per_child: int = Field(50, ge=1)
    neonize_max_store_connections: int = Field(90, ge=2)
    neonize_store_schema: str = "devices_wa"
    neonize_proxy: str | None = None
    # say "online" once connected: WhatsApp sends a contact's typing only to an
    # online client (while it is, the phone holds back its own notifications)
    neonize_mark_online: bool = True
    # history sync after linking: how many days back messages are imported,
    # how many go to the worker at a time, and how long without a new history
    # blob ends the import (one history_synced event)
    neonize_history_days: float = Field(30.0, gt=0)
    neonize_history_batch: int = Field(500, ge=1)
    neonize_history_quiet_seconds: float = Field(20.0, gt=0)

    # simulator driver
    sim_qr_first_delay: float = Field(1.0, ge=0)
    sim_qr_interval: float = Field(20.0, gt=0)
    sim_qr_max_codes: int = Field(6, ge=1)
    sim_receipt_delay: float = Field(1.0, ge=0)  # sent → delivered
    sim_read_delay: float = Field(2.0, ge=0)  # delivered → read

    @model_validator(mode="after")
    def _check_ttls(self) -> WorkerSettings:
        if self.heartbeat_interval_seconds >= self.heartbeat_ttl_seconds:
            raise ValueError("WORKER_HEARTBEAT_INTERVAL_SECONDS must be below the TTL")
        if self.renew_interval >= self.lease_ttl_seconds / 2:
            raise ValueError("WORKER_LEASE_RENEW_INTERVAL_SECONDS must be below half the TTL")
        return self

    @property
    def renew_interval(self) -> float:
        return self.lease_renew_interval_seconds or self.lease_ttl_seconds / 3
