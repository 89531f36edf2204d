"""/api/devices (docs/API.md "Devices").

Linking and unlinking numbers is an admin's job (create, pair, logout, delete);
agents see the devices and may connect or disconnect an existing one.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from clarin_common.auth import AdminUser, CurrentUser
from clarin_common.contract import Device
from clarin_devices.deps import DevicesCtx
from clarin_devices.devices import service
from clarin_devices.devices.schemas import (
    DeviceCreate,
    DeviceList,
    PairingCode,
    PairPhoneRequest,
    QrCode,
)

router = APIRouter(prefix="/api/devices", tags=["devices"])


@router.get("", response_model=DeviceList)
async def list_devices(principal: CurrentUser, ctx: DevicesCtx) -> DeviceList:
    return DeviceList(items=await service.list_devices(ctx, principal))


@router.post("", status_code=201, response_model=Device)
async def create_device(body: DeviceCreate, principal: AdminUser, ctx: DevicesCtx) -> Device:
    return await service.create_device(ctx, principal, body)


@router.get("/{device_id}", response_model=Device)
async def get_device(device_id: str, principal: CurrentUser, ctx: DevicesCtx) -> Device:
    return await service.get_device(ctx, principal, device_id)


@router.post("/{device_id}/connect", status_code=202, response_model=Device)
async def connect_device(device_id: str, principal: CurrentUser, ctx: DevicesCtx) -> Device:
    return await service.connect_device(ctx, principal, device_id)


@router.get("/{device_id}/qr", response_model=QrCode)
async def get_qr(device_id: str, principal: CurrentUser, ctx: DevicesCtx) -> QrCode:
    return await service.get_qr(ctx, principal, device_id)


@router.post("/{device_id}/pair-phone", response_model=PairingCode)
async def pair_phone(
    device_id: str, body: PairPhoneRequest, principal: AdminUser, ctx: DevicesCtx
) -> PairingCode:
    code = await service.pair_phone(ctx, principal, device_id, body.phone)
    return PairingCode(pairing_code=code)


@router.post("/{device_id}/disconnect", status_code=202, response_model=Device)
async def disconnect_device(device_id: str, principal: CurrentUser, ctx: DevicesCtx) -> Device:
    return await service.disconnect_device(ctx, principal, device_id)


@router.post("/{device_id}/logout", status_code=202, response_model=Device)
async def logout_device(device_id: str, principal: AdminUser, ctx: DevicesCtx) -> Device:
    return await service.logout_device(ctx, principal, device_id)


@router.delete("/{device_id}", status_code=204, response_class=Response)
async def delete_device(device_id: str, principal: AdminUser, ctx: DevicesCtx) -> Response:
    await service.delete_device(ctx, principal, device_id)
    return Response(status_code=204)
