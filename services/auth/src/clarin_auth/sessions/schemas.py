"""Request and answer bodies of /api/auth."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, StringConstraints

from clarin_auth.users.schemas import Email, Name, Password
from clarin_common.contract import Account, User

# Opaque refresh tokens are 43 characters; the bound only keeps junk out.
RefreshTokenField = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)
]


class RegisterIn(BaseModel):
    account_name: Name
    name: Name
    email: Email
    password: Password


class LoginIn(BaseModel):
    email: Email
    # Not held to the 8-character rule: a wrong password is just wrong (401).
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class RefreshIn(BaseModel):
    refresh_token: RefreshTokenField


class Session(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    user: User
    account: Account


class Me(BaseModel):
    user: User
    account: Account


class PasswordChange(BaseModel):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    new_password: Password
