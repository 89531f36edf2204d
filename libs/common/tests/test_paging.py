"""clarin_common.paging: one cursor encoding, strict decoding."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from clarin_common.errors import ValidationFailed
from clarin_common.paging import Key, decode_cursor, encode_cursor, page

AT = datetime(2026, 11, 28, 18, 0, 0, 123456, tzinfo=UTC)
ID = str(uuid.uuid4())


def test_round_trips() -> None:
    assert decode_cursor(encode_cursor(Key(AT, ID))) == Key(AT, ID)
    ranked = Key(AT, ID, rank=0.25)
    assert decode_cursor(encode_cursor(ranked), ranked=True) == ranked
    # url-safe, unpadded
    assert set(encode_cursor(ranked)) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("cursor", "ranked"),
    [
        ("not a cursor", False),
        (_b64(b"{}"), False),
        (_b64(b'["2026-11-28T18:00:00", "' + ID.encode() + b'"]'), False),  # naive time
        (_b64(b'["2026-11-28T18:00:00+00:00", "not-a-uuid"]'), False),
        (encode_cursor(Key(AT, ID)), True),  # a plain cursor where a ranked one belongs
        (encode_cursor(Key(AT, ID, rank=1.0)), False),
        (_b64(b'[true, "2026-11-28T18:00:00+00:00", "' + ID.encode() + b'"]'), True),
        (_b64(b"\xff\xfe"), False),
    ],
)
def test_refuses_what_it_did_not_make(cursor: str, ranked: bool) -> None:
    with pytest.raises(ValidationFailed) as caught:
        decode_cursor(cursor, ranked=ranked)
    assert caught.value.status_code == 422
    assert caught.value.details == [
        {"loc": ["query", "cursor"], "msg": "Invalid cursor", "type": "value_error"}
    ]


def test_page_names_the_next_one_only_when_there_is_more() -> None:
    keys = [Key(AT, str(uuid.uuid4())) for _ in range(3)]
    items, cursor = page(keys, 2, lambda k: k)
    assert items == keys[:2]
    assert cursor is not None and decode_cursor(cursor) == keys[1]
    assert page(keys[:2], 2, lambda k: k) == (keys[:2], None)
    assert page([], 2, lambda k: k) == ([], None)
