"""The errors of an account's users (rendered by the common handler)."""

from __future__ import annotations

from clarin_common.errors import Conflict, NotFound


class EmailTaken(Conflict):
    code = "email_taken"
    message = "This email is already registered"


class UserNotFound(NotFound):
    code = "user_not_found"
    message = "User not found"


class CannotRemoveSelf(Conflict):
    code = "cannot_remove_self"
    message = "You cannot remove or disable yourself"


class LastAdmin(Conflict):
    code = "last_admin"
    message = "The account must keep at least one active admin"
