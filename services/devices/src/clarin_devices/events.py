"""What the devices API and the device workers publish about devices.

Whoever changes a device's visible state (the API for what users ask, the owning
worker for what WhatsApp reports) commits it and then publishes both events, so
each change is published once: the API through its outbox
(:func:`device_status_events` staged in the change's transaction), the worker
with :func:`publish_device_status`.
"""

from __future__ import annotations

import json

import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from clarin_common.contract import Device
from clarin_common.events import (
    DeviceStatusData,
    WaStatus,
    app_envelope,
    app_event_subject,
    wa_envelope,
    wa_event_subject,
)
from clarin_common.nats import publish_events
from clarin_common.outage import NatsOutage, is_outage
from clarin_common.outbox import Event

log = structlog.get_logger(__name__)

# Core NATS subject (no stream): "a device's desired state changed, reconcile now".
DEVICES_CHANGED_SUBJECT = "devices.changed"


def device_status_events(
    device: Device, *, worker_id: str | None = None, push_name: str | None = None
) -> list[Event]:
    """``wa.evt.{account}.{device}.status`` and ``app.{account}.device_status``."""
    status = WaStatus(
        status=device.status,
        phone=device.phone,
        jid=device.jid,
        push_name=push_name,
        last_error=device.last_error,
        worker_id=worker_id,
    )
    return [
        (
            wa_event_subject(device.account_id, device.id, "status"),
            wa_envelope(device.account_id, device.id, "status", status),
        ),
        (
            app_event_subject(device.account_id, "device_status"),
            app_envelope(
                device.account_id,
                "device_status",
                DeviceStatusData(device=device),
                device_id=device.id,
            ),
        ),
    ]


async def publish_device_status(
    js: JetStreamContext,
    device: Device,
    *,
    worker_id: str | None = None,
    push_name: str | None = None,
    outage: NatsOutage | None = None,
) -> None:
    """Publish :func:`device_status_events` (after the change is committed); a
    NATS outage is reported to ``outage`` (said once) rather than per event."""
    try:
        # both together: one round trip for the two acks, not two
        await publish_events(
            js, device_status_events(device, worker_id=worker_id, push_name=push_name)
        )
    except Exception as exc:  # the row is committed; a lost notice is logged, not fatal
        if outage is not None and is_outage(exc):
            outage.failed(exc, lost="device_status", device_id=device.id)
        else:
            log.error("device_status_publish_failed", device_id=device.id, error=str(exc))
        return
    if outage is not None:
        outage.ok()


async def notify_devices_changed(nc: NatsClient, reason: str, device_id: str | None = None) -> None:
    """Wake the workers' reconcile loops (best effort; they also poll)."""
    try:
        await nc.publish(
            DEVICES_CHANGED_SUBJECT, json.dumps({"reason": reason, "device_id": device_id}).encode()
        )
    except Exception as exc:
        log.warning("devices_changed_publish_failed", error=str(exc))
