"""What the auth endpoints get from the running app: one context, built by the
lifespan (``clarin_auth.main``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends

from clarin_auth.security import PasswordHasher, TokenFactory
from clarin_auth.settings import AuthSettings
from clarin_common.app import context_dependency
from clarin_common.outbox import Outbox


@dataclass(frozen=True)
class AuthContext:
    settings: AuthSettings
    pool: asyncpg.Pool
    passwords: PasswordHasher
    tokens: TokenFactory
    # announces ended sessions to the gateways after commit
    outbox: Outbox


AuthCtx = Annotated[AuthContext, Depends(context_dependency(AuthContext))]
