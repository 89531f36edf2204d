"""Dependencies of the auth endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from clarin_auth.revocations import Revocations
from clarin_auth.security import PasswordHasher, TokenFactory
from clarin_common.errors import ServiceUnavailable


@dataclass(frozen=True)
class Security:
    """What the lifespan prepares for signing in: the hasher, the token factory and
    the announcer of ended sessions."""

    passwords: PasswordHasher
    tokens: TokenFactory
    revocations: Revocations


def get_security(request: Request) -> Security:
    security = getattr(request.app.state, "security", None)
    if not isinstance(security, Security):
        raise ServiceUnavailable("Auth service is starting")
    return security


SecurityDep = Annotated[Security, Depends(get_security)]
