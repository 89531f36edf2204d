"""Calls from one service to another over HTTP, on behalf of the caller.

A subclass names the service and adds one method per question it asks, e.g.
:class:`clarin_common.users.UserDirectory` (auth: who is in the account).
The caller's ``Authorization`` header travels with the call, so the other
service applies its own tenancy rules: nothing is asked with more rights than
the user has. One pooled client per process, opened and closed by the lifespan
(an async context manager, or :meth:`ServiceClient.aclose`).
"""

from __future__ import annotations

from typing import Any, Self

import httpx
import structlog

from clarin_common.errors import ServiceUnavailable, Unauthorized

log = structlog.get_logger(__name__)


class ServiceClient:
    """The pooled HTTP client of calls to ``service`` at ``base_url``."""

    service = "upstream"

    def __init__(self, base_url: str, timeout: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout, trust_env=False
        )

    def unavailable(self) -> ServiceUnavailable:
        return ServiceUnavailable(f"The {self.service} service is unavailable; nothing was changed")

    async def get(self, path: str, authorization: str) -> httpx.Response:
        """``GET path`` with the caller's token.

        A transport failure is 503 (nothing was changed); the other service
        refusing the token is 401 ``invalid_token``. Every other answer is the
        subclass's to read.
        """
        try:
            resp = await self._http.get(path, headers={"Authorization": authorization})
        except httpx.HTTPError as exc:
            log.warning("service_unreachable", service=self.service, error=str(exc)[:300])
            raise self.unavailable() from exc
        if resp.status_code == 401:
            raise Unauthorized("Invalid access token", code="invalid_token")
        return resp

    def json(self, resp: httpx.Response) -> Any:
        """The body of a 2xx answer; anything else from the service is 503."""
        if not resp.is_success:
            log.warning("service_unexpected_status", service=self.service, status=resp.status_code)
            raise self.unavailable()
        try:
            return resp.json()
        except ValueError as exc:
            log.warning("service_bad_answer", service=self.service, error=str(exc)[:300])
            raise self.unavailable() from exc

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
