"""The devices service, asked whether a device belongs to the caller's account."""

from __future__ import annotations

from clarin_common.clients import ServiceClient
from clarin_messaging.messages.exceptions import DeviceNotFound


class DevicesClient(ServiceClient):
    """Asks devices (``GET /api/devices/{id}``, with the caller's token)."""

    service = "devices"

    async def ensure_owned(self, device_id: str, authorization: str) -> None:
        """Raise :class:`DeviceNotFound` unless the caller sees ``device_id``."""
        resp = await self.get(f"/api/devices/{device_id}", authorization)
        if resp.status_code in (404, 422):
            raise DeviceNotFound()
        self.json(resp)  # any other answer than 2xx: the service is unavailable
