"""What campaigns asks other services over HTTP, with the caller's token."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import structlog
from pydantic import ValidationError

from clarin_common.clients import ServiceClient
from clarin_common.contract import Lead
from clarin_common.errors import ValidationFailed

log = structlog.get_logger(__name__)

PAGE = 200


class LeadsClient(ServiceClient):
    service = "leads"

    async def lead(self, lead_id: str, authorization: str) -> Lead | None:
        resp = await self.get(f"/api/leads/{quote(lead_id, safe='')}", authorization)
        if resp.status_code in (404, 422):
            return None
        return self._lead(self.json(resp))

    async def matching(
        self, authorization: str, *, stage: str | None, tag: str | None, limit: int
    ) -> list[Lead]:
        """Every lead of the stage and/or tag (up to ``limit``), newest first."""
        leads: list[Lead] = []
        cursor: str | None = None
        while len(leads) < limit:
            params = [f"limit={PAGE}"]
            if stage:
                params.append(f"stage={quote(stage, safe='')}")
            if tag:
                params.append(f"tag={quote(tag, safe='')}")
            if cursor:
                params.append(f"cursor={quote(cursor, safe='')}")
            resp = await self.get(f"/api/leads?{'&'.join(params)}", authorization)
            if resp.status_code == 422:  # a filter the leads service does not take
                raise ValidationFailed.field(
                    ["body", "audience"], "The leads service refused this stage or tag"
                )
            body = self.json(resp)
            leads += [self._lead(item) for item in body.get("items", [])]
            cursor = body.get("next_cursor")
            if not cursor:
                break
        return leads[:limit]

    def _lead(self, item: Any) -> Lead:
        try:
            return Lead.model_validate(item)
        except ValidationError as exc:
            log.warning("leads_bad_answer", error=str(exc)[:300])
            raise self.unavailable() from exc


class DevicesClient(ServiceClient):
    service = "devices"

    async def exists(self, device_id: str, authorization: str) -> bool:
        resp = await self.get(f"/api/devices/{quote(device_id, safe='')}", authorization)
        if resp.status_code in (404, 422):
            return False
        self.json(resp)
        return True
