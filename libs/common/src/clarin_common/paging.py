"""Keyset paging: opaque cursors that name the last item of a page.

A list is ordered by ``(time, id)`` (newest first, the id breaking ties) or by
``(score, time, id)``; the cursor is that key of the page's last item as a JSON
array, base64url without padding. The next page is the rows strictly after it,
so rows that tie in time are never skipped or repeated. A cursor the API did
not make answers 422 with ``loc: ["query", "cursor"]``.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from clarin_common.errors import ValidationFailed

T = TypeVar("T")


@dataclass(frozen=True)
class Key:
    """Where a page ends: the time and id of its last item (and its score, if the
    list is ordered by one)."""

    at: datetime
    id: str
    rank: float | None = None


def encode_cursor(key: Key) -> str:
    values: list[object] = [key.at.isoformat(), str(key.id)]
    if key.rank is not None:
        values.insert(0, key.rank)
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, ranked: bool = False) -> Key:
    """The key a cursor names; 422 for anything :func:`encode_cursor` did not make
    (or a ranked cursor where a plain one belongs, and the reverse)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != (3 if ranked else 2):
            raise ValueError("not a cursor")
        rank: float | None = None
        if ranked:
            score = values.pop(0)
            if not isinstance(score, int | float) or isinstance(score, bool):
                raise ValueError("rank is not a number")
            rank = float(score)
        at_text, id_text = values
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None:
            raise ValueError("naive time")
        return Key(at=at, id=str(uuid.UUID(id_text)), rank=rank)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationFailed.field(["query", "cursor"], "Invalid cursor") from exc


def page(rows: Sequence[T], limit: int, key: Callable[[T], Key]) -> tuple[list[T], str | None]:
    """The first ``limit`` of ``rows`` (fetched as ``limit + 1``) and the cursor of
    the next page, None when there is none."""
    items = list(rows[:limit])
    return items, encode_cursor(key(items[-1])) if len(rows) > limit else None
