from __future__ import annotations

import pytest

from clarin_common.errors import NotFound
from clarin_common.events import (
    RawEnvelope,
    WaQr,
    app_event_subject,
    wa_command_subject,
    wa_envelope,
    wa_event_subject,
    ws_frame,
)
from clarin_common.ids import (
    chat_id_for,
    jid_from_recipient,
    normalize_jid,
    phone_from_jid,
    uuid_or,
)


def test_subjects() -> None:
    assert wa_event_subject("a1", "d1", "message") == "wa.evt.a1.d1.message"
    assert app_event_subject("a1", "new_message") == "app.a1.new_message"
    assert wa_command_subject("d1") == "wa.cmd.d1"
    for bad in ("", "a.b", "*", ">", "a b"):
        with pytest.raises(ValueError):
            wa_event_subject(bad, "d1", "qr")


def test_envelope_round_trip_and_ws_frame() -> None:
    env = wa_envelope("acc", "dev", "qr", WaQr(code="2@abc", expires_at="2026-11-28T18:00:20Z"))
    raw = RawEnvelope.model_validate_json(env.model_dump_json())
    assert raw.id == env.id and raw.data["code"] == "2@abc"
    frame = ws_frame(raw)
    assert frame["type"] == "qr" and frame["account_id"] == "acc"
    assert frame["ts"].endswith("Z")


def test_ids() -> None:
    assert normalize_jid("5215512345678:12@S.WhatsApp.net") == "5215512345678@s.whatsapp.net"
    assert chat_id_for("d", "5215512345678:3@s.whatsapp.net") == chat_id_for(
        "d", "5215512345678@s.whatsapp.net"
    )
    assert chat_id_for("d", "1@s.whatsapp.net") != chat_id_for("e", "1@s.whatsapp.net")
    assert phone_from_jid("5215512345678@s.whatsapp.net") == "5215512345678"
    assert phone_from_jid("12036304@g.us") is None
    assert jid_from_recipient("+52 1 55 1234 5678") == "5215512345678@s.whatsapp.net"
    with pytest.raises(ValueError):
        jid_from_recipient("12")


def test_uuid_or_canonicalizes_or_raises_the_error_given() -> None:
    assert uuid_or("6F1C2B5E3F0A4C8E9D512A7B1E0C9A44", NotFound) == (
        "6f1c2b5e-3f0a-4c8e-9d51-2a7b1e0c9a44"
    )
    with pytest.raises(NotFound):
        uuid_or("not-a-uuid", NotFound)
