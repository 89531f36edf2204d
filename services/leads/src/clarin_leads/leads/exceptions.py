"""The errors of leads (rendered by the common handler)."""

from __future__ import annotations

from clarin_common.errors import Conflict, NotFound


class LeadNotFound(NotFound):
    code = "lead_not_found"
    message = "Lead not found"


class PhoneTaken(Conflict):
    code = "lead_phone_taken"
    message = "Another lead of this account already has this phone number"

    def __init__(self) -> None:
        super().__init__(details=[{"loc": ["body", "phone"], "msg": self.message}])
