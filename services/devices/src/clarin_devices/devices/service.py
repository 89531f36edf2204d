"""The rules of the devices API; nothing here knows HTTP.

The API stores what the user wants (``desired_state``) and wakes the workers;
the worker that owns a device does the WhatsApp side and reports the status.
"""

from __future__ import annotations

import uuid

import structlog

from clarin_common.auth import Principal
from clarin_common.commands import CommandRefused
from clarin_common.contract import Device
from clarin_common.db import transaction
from clarin_common.errors import Conflict, DeviceNotConnected, ServiceUnavailable, ValidationFailed
from clarin_common.events import LogoutCommand, PairPhoneCommand
from clarin_common.outbox import PendingEvent, stage_events
from clarin_devices.deps import DevicesContext
from clarin_devices.devices import repository as repo
from clarin_devices.devices.exceptions import (
    AlreadyPaired,
    DeviceNotFound,
    NoPairingCode,
    QrNotPending,
)
from clarin_devices.devices.schemas import DeviceCreate, QrCode
from clarin_devices.events import device_status_events, notify_devices_changed

log = structlog.get_logger(__name__)

LIVE_STATUSES = ("connecting", "qr_pending", "connected")


def _device_uuid(device_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(device_id)
    except ValueError as exc:
        raise DeviceNotFound() from exc


async def create_device(ctx: DevicesContext, principal: Principal, body: DeviceCreate) -> Device:
    return await repo.insert(ctx.pool, principal.account_id, body.name)


async def list_devices(ctx: DevicesContext, principal: Principal) -> list[Device]:
    return await repo.list_for_account(ctx.pool, principal.account_id)


async def get_device(ctx: DevicesContext, principal: Principal, device_id: str) -> Device:
    device = await repo.get_by_id_for_account(
        ctx.pool, _device_uuid(device_id), principal.account_id
    )
    if device is None:
        raise DeviceNotFound()
    return device


async def _change(
    ctx: DevicesContext, principal: Principal, device_id: str, change: repo.Change
) -> Device:
    """Apply what the user asked for; a change users see is announced (through the
    outbox, after commit), and the workers are woken either way."""
    events: list[PendingEvent] = []
    async with transaction(ctx.pool) as conn:
        transition = await repo.change_for_account(
            conn, _device_uuid(device_id), principal.account_id, change
        )
        if transition is None:
            raise DeviceNotFound()
        if transition.changed:
            events = await stage_events(conn, device_status_events(transition.device))
    await ctx.outbox.publish(events)
    await notify_devices_changed(ctx.nc, change, transition.device.id)
    return transition.device


async def connect_device(ctx: DevicesContext, principal: Principal, device_id: str) -> Device:
    return await _change(ctx, principal, device_id, "connect")


async def disconnect_device(ctx: DevicesContext, principal: Principal, device_id: str) -> Device:
    return await _change(ctx, principal, device_id, "disconnect")


async def get_qr(ctx: DevicesContext, principal: Principal, device_id: str) -> QrCode:
    device_uuid = _device_uuid(device_id)
    qr = await repo.get_qr_for_account(ctx.pool, device_uuid, principal.account_id)
    if qr is None:
        if await repo.get_by_id_for_account(ctx.pool, device_uuid, principal.account_id) is None:
            raise DeviceNotFound()
        raise QrNotPending()
    return qr


async def pair_phone(ctx: DevicesContext, principal: Principal, device_id: str, phone: str) -> str:
    device = await get_device(ctx, principal, device_id)
    if device.status == "connected":
        raise AlreadyPaired()
    try:
        result = await ctx.commands.call(device.id, PairPhoneCommand(phone=phone))
    except CommandRefused as exc:
        if exc.code == "invalid_phone":
            raise ValidationFailed.field(["body", "phone"], exc.message) from exc
        raise
    code = result.get("pairing_code")
    if not isinstance(code, str):
        raise NoPairingCode()
    return code


async def _logout_session(ctx: DevicesContext, device_id: str) -> None:
    """Have the owning worker unlink the number, if it holds a live session.

    No session (or a worker that does not answer) is fine: the desired state
    becomes ``logged_out`` and the worker drops whatever it holds on reconcile.
    """
    try:
        await ctx.commands.call(device_id, LogoutCommand())
    except DeviceNotConnected:
        pass
    except (ServiceUnavailable, Conflict) as exc:
        log.warning("logout_command_failed", device_id=device_id, error=exc.message)


async def logout_device(ctx: DevicesContext, principal: Principal, device_id: str) -> Device:
    device = await get_device(ctx, principal, device_id)
    if device.status in LIVE_STATUSES:
        await _logout_session(ctx, device.id)
    return await _change(ctx, principal, device.id, "logout")


async def delete_device(ctx: DevicesContext, principal: Principal, device_id: str) -> None:
    device = await get_device(ctx, principal, device_id)
    if device.status in LIVE_STATUSES:
        await _logout_session(ctx, device.id)
    if not await repo.delete_for_account(ctx.pool, uuid.UUID(device.id), principal.account_id):
        raise DeviceNotFound()
    await notify_devices_changed(ctx.nc, "delete", device.id)
