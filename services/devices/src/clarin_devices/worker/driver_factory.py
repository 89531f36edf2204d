"""Picks the driver named by ``WORKER_WHATSAPP_DRIVER`` / ``WHATSAPP_DRIVER``."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from clarin_devices.settings import WorkerSettings
from clarin_devices.worker.drivers import WhatsAppDriver


def build_driver(settings: WorkerSettings, nc: NatsClient) -> WhatsAppDriver:
    if settings.whatsapp_driver == "simulator":
        from clarin_devices.worker.drivers.simulator import SimulatorConfig, SimulatorDriver

        return SimulatorDriver(
            nc,
            SimulatorConfig(
                qr_first_delay=settings.sim_qr_first_delay,
                qr_interval=settings.sim_qr_interval,
                qr_max_codes=settings.sim_qr_max_codes,
                receipt_delay=settings.sim_receipt_delay,
                read_delay=settings.sim_read_delay,
                media_max_bytes=settings.media_max_bytes,
                download_timeout=settings.media_download_timeout_seconds,
            ),
        )
    # imported only when chosen: loading neonize costs ~60 MB and a Go runtime
    from clarin_devices.worker.drivers import neonize_driver

    config = neonize_driver.NeonizeConfig(
        sessions_per_child=settings.neonize_sessions_per_child,
        pairing_children=settings.neonize_pairing_children,
        max_attempts_per_child=settings.neonize_max_attempts_per_child,
        max_store_connections=settings.neonize_max_store_connections,
        store_schema=settings.neonize_store_schema,
        proxy=settings.neonize_proxy,
        log_level=settings.log_level,
        media_max_bytes=settings.media_max_bytes,
        media_download_timeout=settings.media_download_timeout_seconds,
        mark_online=settings.neonize_mark_online,
        history_days=settings.neonize_history_days,
        history_batch=settings.neonize_history_batch,
        history_quiet=settings.neonize_history_quiet_seconds,
    )
    return neonize_driver.NeonizeDriver(settings.database_url, config)
