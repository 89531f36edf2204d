"""Request and answer bodies of /api/users, and the field types auth shares."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, EmailStr, StringConstraints

from clarin_common.contract import Role, User


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


# Emails are compared and stored trimmed and in lower case, so " Alice@Example.COM "
# and "alice@example.com" are one user.
Email = Annotated[EmailStr, BeforeValidator(_strip), AfterValidator(str.lower)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
# Spaces are legitimate password characters: never trimmed.
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]


class UserCreate(BaseModel):
    name: Name
    email: Email
    password: Password
    role: Role


class UserList(BaseModel):
    items: list[User]


class UserUpdate(BaseModel):
    """What an admin may change of a user; a field left out stays as it is."""

    name: Name | None = None
    role: Role | None = None
    disabled: bool | None = None
