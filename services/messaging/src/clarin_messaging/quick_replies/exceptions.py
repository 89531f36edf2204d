"""The errors of quick replies (rendered by the common handler)."""

from __future__ import annotations

from clarin_common.errors import Conflict, NotFound


class QuickReplyNotFound(NotFound):
    code = "quick_reply_not_found"
    message = "Quick reply not found"


class ShortcutTaken(Conflict):
    code = "shortcut_taken"
    message = "Another quick reply already uses this shortcut"

    def __init__(self) -> None:
        super().__init__(details=[{"loc": ["body", "shortcut"], "msg": self.message}])
