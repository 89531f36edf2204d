"""The caller's account, and the users of it as the auth service knows them
(the directory itself is shared: :mod:`clarin_common.users`)."""

from __future__ import annotations

import uuid

from clarin_common.auth import Principal
from clarin_common.errors import Unauthorized
from clarin_common.users import AccountUsers, AccountUsersDep, UserDirectory

__all__ = ["AccountUsers", "AccountUsersDep", "UserDirectory", "account_uuid"]


def account_uuid(principal: Principal) -> str:
    """The token's account id; every tenant row is keyed by it (a uuid)."""
    try:
        return str(uuid.UUID(principal.account_id))
    except ValueError as exc:
        raise Unauthorized("Invalid access token", code="invalid_token") from exc
