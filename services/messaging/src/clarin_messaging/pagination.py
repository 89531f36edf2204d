"""Opaque cursors: (time, id) of the last item, so ties in time never skip a row."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from clarin_common.errors import ValidationFailed


def encode_cursor(at: datetime, id_: str) -> str:
    raw = json.dumps([at.isoformat(), str(id_)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at_text, id_text = json.loads(raw)
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None:
            raise ValueError("naive time")
        return at, str(uuid.UUID(id_text))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationFailed.field(["query", "cursor"], "Invalid cursor") from exc


def encode_ranked_cursor(rank: float, at: datetime, id_: str) -> str:
    """A cursor for lists ordered by a score first (search): (score, time, id)."""
    raw = json.dumps([rank, at.isoformat(), str(id_)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_ranked_cursor(cursor: str) -> tuple[float, datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        rank, at_text, id_text = json.loads(raw)
        if not isinstance(rank, int | float) or isinstance(rank, bool):
            raise ValueError("rank is not a number")
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None:
            raise ValueError("naive time")
        return float(rank), at, str(uuid.UUID(id_text))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationFailed.field(["query", "cursor"], "Invalid cursor") from exc
