"""The rules of the devices API; nothing here knows HTTP.

The API stores what the user wants (``desired_state``) and wakes the workers;
the worker that owns a device does the WhatsApp side and reports the status.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import structlog
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from pydantic import BaseModel

from clarin_common.auth import Principal
from clarin_common.contract import Device
from clarin_common.errors import (
    Conflict,
    DeviceNotConnected,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from clarin_common.events import (
    CommandReply,
    LogoutCommand,
    PairPhoneCommand,
    wa_command_subject,
)
from clarin_common.nats import request_json
from clarin_devices.devices import repository as repo
from clarin_devices.devices.schemas import DeviceCreate, QrCode
from clarin_devices.events import notify_devices_changed, publish_device_status

log = structlog.get_logger(__name__)

LIVE_STATUSES = ("connecting", "qr_pending", "connected")


class DeviceNotFound(NotFound):
    code = "device_not_found"
    message = "Device not found"


def _device_uuid(device_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(device_id)
    except ValueError as exc:
        raise DeviceNotFound() from exc


async def create_device(pool: asyncpg.Pool, principal: Principal, body: DeviceCreate) -> Device:
    return await repo.insert(pool, principal.account_id, body.name)


async def list_devices(pool: asyncpg.Pool, principal: Principal) -> list[Device]:
    return await repo.list_for_account(pool, principal.account_id)


async def get_device(pool: asyncpg.Pool, principal: Principal, device_id: str) -> Device:
    found = await repo.get_by_id_for_account(pool, _device_uuid(device_id), principal.account_id)
    if found is None:
        raise DeviceNotFound()
    return found[0]


async def _apply(
    pool: asyncpg.Pool,
    js: JetStreamContext,
    nc: NatsClient,
    transition: repo.Transition | None,
    reason: str,
) -> Device:
    if transition is None:
        raise DeviceNotFound()
    if transition.changed:
        await publish_device_status(js, transition.device)
    await notify_devices_changed(nc, reason, transition.device.id)
    return transition.device


async def connect_device(
    pool: asyncpg.Pool, nc: NatsClient, js: JetStreamContext, principal: Principal, device_id: str
) -> Device:
    transition = await repo.connect_for_account(pool, _device_uuid(device_id), principal.account_id)
    return await _apply(pool, js, nc, transition, "connect")


async def disconnect_device(
    pool: asyncpg.Pool, nc: NatsClient, js: JetStreamContext, principal: Principal, device_id: str
) -> Device:
    transition = await repo.disconnect_for_account(
        pool, _device_uuid(device_id), principal.account_id
    )
    return await _apply(pool, js, nc, transition, "disconnect")


async def get_qr(pool: asyncpg.Pool, principal: Principal, device_id: str) -> QrCode:
    device_uuid = _device_uuid(device_id)
    qr = await repo.get_qr_for_account(pool, device_uuid, principal.account_id)
    if qr is None:
        if await repo.get_by_id_for_account(pool, device_uuid, principal.account_id) is None:
            raise DeviceNotFound()
        raise NotFound("No QR code is pending for this device", code="qr_not_pending")
    return QrCode(code=qr[0], expires_at=qr[1])


async def send_command(
    nc: NatsClient, device_id: str, command: BaseModel, timeout: float
) -> dict[str, Any]:
    """Ask the worker that owns the device; 409 when none holds a live session."""
    try:
        raw = await request_json(nc, wa_command_subject(device_id), command, timeout=timeout)
    except NoRespondersError as exc:
        raise DeviceNotConnected() from exc
    except (NatsTimeoutError, TimeoutError) as exc:
        raise ServiceUnavailable("The device worker did not answer in time") from exc
    reply = CommandReply.model_validate(raw)
    if reply.ok:
        return reply.result or {}
    error = reply.error or {}
    code = error.get("code", "driver_error")
    message = error.get("message", "The device refused the command")
    if code == "device_not_connected":
        raise DeviceNotConnected(message)
    if code == "invalid_phone":
        raise ValidationFailed.field(["body", "phone"], message)
    raise Conflict(message, code=code)


async def pair_phone(
    pool: asyncpg.Pool,
    nc: NatsClient,
    principal: Principal,
    device_id: str,
    phone: str,
    timeout: float,
) -> str:
    device = await get_device(pool, principal, device_id)
    if device.status == "connected":
        raise Conflict("The device is already linked to a number", code="already_paired")
    result = await send_command(nc, device.id, PairPhoneCommand(phone=phone), timeout)
    code = result.get("pairing_code")
    if not isinstance(code, str):
        raise ServiceUnavailable("The device worker gave no pairing code")
    return code


async def _logout_session(nc: NatsClient, device_id: str, timeout: float) -> None:
    """Have the owning worker unlink the number, if it holds a live session.

    No session (or a worker that does not answer) is fine: the desired state
    becomes ``logged_out`` and the worker drops whatever it holds on reconcile.
    """
    try:
        await send_command(nc, device_id, LogoutCommand(), timeout)
    except DeviceNotConnected:
        pass
    except (ServiceUnavailable, Conflict) as exc:
        log.warning("logout_command_failed", device_id=device_id, error=exc.message)


async def logout_device(
    pool: asyncpg.Pool,
    nc: NatsClient,
    js: JetStreamContext,
    principal: Principal,
    device_id: str,
    timeout: float,
) -> Device:
    device = await get_device(pool, principal, device_id)
    if device.status in LIVE_STATUSES:
        await _logout_session(nc, device.id, timeout)
    transition = await repo.logout_for_account(pool, uuid.UUID(device.id), principal.account_id)
    return await _apply(pool, js, nc, transition, "logout")


async def delete_device(
    pool: asyncpg.Pool, nc: NatsClient, principal: Principal, device_id: str, timeout: float
) -> None:
    device = await get_device(pool, principal, device_id)
    if device.status in LIVE_STATUSES:
        await _logout_session(nc, device.id, timeout)
    if not await repo.delete_for_account(pool, uuid.UUID(device.id), principal.account_id):
        raise DeviceNotFound()
    await notify_devices_changed(nc, "delete", device.id)
