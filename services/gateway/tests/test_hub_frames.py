"""app_frame: the bytes of an app event to the frame of API.md, without a model
when the envelope is well formed and through the model otherwise."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from clarin_common.events import ChatReadData, RawEnvelope, app_envelope, ws_frame
from clarin_common.nats import encode
from clarin_gateway.ws.hub import app_frame


def model_frame(payload: bytes) -> dict[str, object]:
    return ws_frame(RawEnvelope.model_validate_json(payload))


def test_frame_is_what_the_model_makes() -> None:
    account = str(uuid.uuid4())
    payload = encode(app_envelope(account, "chat_read", ChatReadData(chat_id="c-1")))
    framed = app_frame(account, payload)
    assert framed is not None
    event_type, frame = framed
    assert event_type == "chat_read"
    assert json.loads(frame) == model_frame(payload)


def test_ts_is_utc_with_z_whatever_the_offset() -> None:
    account = str(uuid.uuid4())
    at = datetime(2026, 11, 29, 7, 0, tzinfo=timezone(timedelta(hours=-3)))
    envelope = {
        "id": "e-1",
        "type": "chat_read",
        "account_id": account,
        "occurred_at": at.isoformat(),
        "data": {"chat_id": "c"},
    }
    framed = app_frame(account, json.dumps(envelope).encode())
    assert framed is not None
    assert json.loads(framed[1])["ts"] == "2026-11-29T10:00:00Z"


def test_what_orjson_or_isoformat_refuse_goes_through_the_model() -> None:
    account = str(uuid.uuid4())
    # a unix timestamp: not ISO, but the envelope model takes it
    envelope = {
        "id": "e-2",
        "type": "chat_read",
        "account_id": account,
        "occurred_at": 1_764_000_000,
        "data": {"chat_id": "c"},
    }
    payload = json.dumps(envelope).encode()
    framed = app_frame(account, payload)
    assert framed is not None
    assert json.loads(framed[1]) == model_frame(payload)


def test_other_accounts_and_malformed_events_make_no_frame() -> None:
    account, other = str(uuid.uuid4()), str(uuid.uuid4())
    forged = encode(app_envelope(other, "chat_read", ChatReadData(chat_id="c")))
    assert app_frame(account, forged) is None
    assert app_frame(account, b"not json") is None
    assert app_frame(account, b"[1, 2]") is None
    no_data = {"id": "e", "type": "x", "account_id": account, "occurred_at": "2026-01-01T00:00:00Z"}
    assert app_frame(account, json.dumps(no_data).encode()) is None
    # the model path refuses an account mismatch too
    odd = {
        "id": "e",
        "type": "x",
        "account_id": other,
        "occurred_at": 1_764_000_000,
        "data": {},
    }
    assert app_frame(account, json.dumps(odd).encode()) is None
