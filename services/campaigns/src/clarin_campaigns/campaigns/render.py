"""What one lead receives."""

from __future__ import annotations

import re

_NAME = re.compile(r"\{\{\s*name\s*\}\}")


def fill(body: str, name: str) -> str:
    """``body`` with ``{{name}}`` (spaces allowed inside the braces) as the lead's name."""
    return _NAME.sub(lambda _: name, body)
