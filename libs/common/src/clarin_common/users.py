"""The users of the caller's account, as the auth service knows them.

The token only says who the caller is; whether another user id belongs to the
same account is known by auth alone, so a foreign id is never trusted. A
service that accepts user ids (assignees of leads and chats) keeps one
:class:`UserDirectory` as ``user_directory`` of its context
(:func:`clarin_common.app.service_context`) and asks through
:data:`AccountUsersDep`.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import structlog
from fastapi import Depends, Request

from clarin_common.auth import Principal, current_principal
from clarin_common.clients import ServiceClient
from clarin_common.errors import ServiceUnavailable

log = structlog.get_logger(__name__)


def _normalized(user_id: str) -> str | None:
    try:
        return str(uuid.UUID(user_id))
    except ValueError:
        return None


class UserDirectory(ServiceClient):
    """Asks auth (``GET /api/users``, with the caller's token) who is in the account."""

    service = "auth"

    def unavailable(self) -> ServiceUnavailable:
        return ServiceUnavailable("The user directory (auth) is unavailable; nothing was changed")

    async def user_ids(self, authorization: str) -> set[str]:
        body = self.json(await self.get("/api/users", authorization))
        try:
            return {str(uuid.UUID(str(item["id"]))) for item in body["items"]}
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("auth_bad_answer", error=str(exc)[:300])
            raise self.unavailable() from exc


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


def _directory(request: Request) -> UserDirectory:
    resources = getattr(request.app.state, "resources", None)
    directory = getattr(getattr(resources, "context", None), "user_directory", None)
    if not isinstance(directory, UserDirectory):
        raise ServiceUnavailable("The service is starting")
    return directory


def get_account_users(request: Request) -> AccountUsers:
    principal = current_principal(request)
    directory = _directory(request)
    return AccountUsers(directory, principal, request.headers.get("authorization", ""))


AccountUsersDep = Annotated[AccountUsers, Depends(get_account_users)]
