"""/api/devices (API.md "Devices").

Linking and unlinking numbers is an admin's job (create, pair, logout, delete);
agents see the devices and may connect or disconnect an existing one.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from clarin_common.app import DbPool, JetStream, Nats
from clarin_common.auth import AdminUser, CurrentUser
from clarin_common.contract import Device
from clarin_devices.devices import service
from clarin_devices.devices.schemas import (
    DeviceCreate,
    DeviceList,
    PairingCode,
    PairPhoneRequest,
    QrCode,
)
from clarin_devices.settings import DevicesSettings

router = APIRouter(prefix="/api/devices", tags=["devices"])


def _command_timeout(request: Request) -> float:
    settings: DevicesSettings = request.app.state.settings
    return settings.command_timeout_seconds


@router.get("", response_model=DeviceList)
async def list_devices(principal: CurrentUser, pool: DbPool) -> DeviceList:
    return DeviceList(items=await service.list_devices(pool, principal))


@router.post("", status_code=201, response_model=Device)
async def create_device(body: DeviceCreate, principal: AdminUser, pool: DbPool) -> Device:
    return await service.create_device(pool, principal, body)


@router.get("/{device_id}", response_model=Device)
async def get_device(device_id: str, principal: CurrentUser, pool: DbPool) -> Device:
    return await service.get_device(pool, principal, device_id)


@router.post("/{device_id}/connect", status_code=202, response_model=Device)
async def connect_device(
    device_id: str, principal: CurrentUser, pool: DbPool, nc: Nats, js: JetStream
) -> Device:
    return await service.connect_device(pool, nc, js, principal, device_id)


@router.get("/{device_id}/qr", response_model=QrCode)
async def get_qr(device_id: str, principal: CurrentUser, pool: DbPool) -> QrCode:
    return await service.get_qr(pool, principal, device_id)


@router.post("/{device_id}/pair-phone", response_model=PairingCode)
async def pair_phone(
    device_id: str,
    body: PairPhoneRequest,
    principal: AdminUser,
    pool: DbPool,
    nc: Nats,
    request: Request,
) -> PairingCode:
    code = await service.pair_phone(
        pool, nc, principal, device_id, body.phone, _command_timeout(request)
    )
    return PairingCode(pairing_code=code)


@router.post("/{device_id}/disconnect", status_code=202, response_model=Device)
async def disconnect_device(
    device_id: str, principal: CurrentUser, pool: DbPool, nc: Nats, js: JetStream
) -> Device:
    return await service.disconnect_device(pool, nc, js, principal, device_id)


@router.post("/{device_id}/logout", status_code=202, response_model=Device)
async def logout_device(
    device_id: str,
    principal: AdminUser,
    pool: DbPool,
    nc: Nats,
    js: JetStream,
    request: Request,
) -> Device:
    return await service.logout_device(
        pool, nc, js, principal, device_id, _command_timeout(request)
    )


@router.delete("/{device_id}", status_code=204, response_class=Response)
async def delete_device(
    device_id: str, principal: AdminUser, pool: DbPool, nc: Nats, request: Request
) -> Response:
    await service.delete_device(pool, nc, principal, device_id, _command_timeout(request))
    return Response(status_code=204)
