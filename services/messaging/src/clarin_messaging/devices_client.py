"""The devices service, asked whether a device belongs to the caller's account."""

from __future__ import annotations

import httpx

from clarin_common.errors import NotFound, ServiceUnavailable, Unauthorized


class DevicesClient:
    def __init__(self, base_url: str, timeout: float) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def ensure_owned(self, device_id: str, authorization: str) -> None:
        """Raise NotFound unless the caller (by their token) sees ``device_id``."""
        try:
            resp = await self._client.get(
                f"/api/devices/{device_id}", headers={"Authorization": authorization}
            )
        except httpx.HTTPError as exc:
            raise ServiceUnavailable("The devices service is unavailable") from exc
        if resp.status_code == 200:
            return
        if resp.status_code in (404, 422):
            raise NotFound("Device not found", code="device_not_found")
        if resp.status_code == 401:
            raise Unauthorized("Invalid access token", code="invalid_token")
        raise ServiceUnavailable("The devices service is unavailable")
