"""The users of the caller's account, as the auth service knows them.

The token only says who the caller is; whether another user id belongs to the
same account is known by auth alone, so a foreign id is never trusted. A
service that accepts user ids (assignees of leads and chats) keeps one
:class:`UserDirectory` at ``app.state.user_directory`` and asks through
:data:`AccountUsersDep`.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import httpx
import structlog
from fastapi import Depends, Request

from clarin_common.auth import Principal, current_principal
from clarin_common.errors import ServiceUnavailable, Unauthorized

log = structlog.get_logger(__name__)

_UNAVAILABLE = "The user directory (auth) is unavailable; nothing was changed"


def _normalized(user_id: str) -> str | None:
    try:
        return str(uuid.UUID(user_id))
    except ValueError:
        return None


class UserDirectory:
    """Asks auth (``GET /api/users``, with the caller's token) who is in the account."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)

    async def close(self) -> None:
        await self._client.aclose()

    async def user_ids(self, authorization: str) -> set[str]:
        try:
            resp = await self._client.get("/api/users", headers={"Authorization": authorization})
        except httpx.HTTPError as exc:
            log.warning("auth_unreachable", error=str(exc)[:300])
            raise ServiceUnavailable(_UNAVAILABLE) from exc
        if resp.status_code == 401:
            raise Unauthorized("Invalid access token", code="invalid_token")
        if resp.status_code != 200:
            log.warning("auth_unexpected_status", status=resp.status_code)
            raise ServiceUnavailable(_UNAVAILABLE)
        try:
            items = resp.json()["items"]
            return {str(uuid.UUID(str(item["id"]))) for item in items}
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("auth_bad_answer", error=str(exc)[:300])
            raise ServiceUnavailable(_UNAVAILABLE) from exc


class AccountUsers:
    """Membership checks for one request (asks auth at most once)."""

    def __init__(self, directory: UserDirectory, principal: Principal, authorization: str) -> None:
        self._directory = directory
        self._principal = principal
        self._authorization = authorization
        self._ids: set[str] | None = None

    async def is_member(self, user_id: str) -> bool:
        normalized = _normalized(user_id)
        if normalized is None:
            return False
        if normalized == _normalized(self._principal.user_id):
            return True  # the caller is in their own account by definition
        if self._ids is None:
            self._ids = await self._directory.user_ids(self._authorization)
        return normalized in self._ids


def get_account_users(request: Request) -> AccountUsers:
    directory: UserDirectory = request.app.state.user_directory
    principal = current_principal(request)
    return AccountUsers(directory, principal, request.headers.get("authorization", ""))


AccountUsersDep = Annotated[AccountUsers, Depends(get_account_users)]
