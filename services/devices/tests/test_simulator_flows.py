"""Issue 11 through the simulator and an in-process worker: the QR that is never
scanned, contacts addressed by LID, status posts, and media in two phases."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import asyncpg
from nats.aio.client import Client as NatsClient

from clarin_common.events import RetryMediaCommand, wa_command_subject
from clarin_common.nats import ensure_object_store, request_json
from clarin_devices.worker.session import QR_EXPIRED_MESSAGE
from services.devices.tests.helpers import Api, EventLog, SimRequest, StartWorker

PICTURE = b"\x89PNG\r\n\x1a\n" + b"\x01" * 48


async def linked(api: Api, events: EventLog, sim_request: SimRequest) -> str:
    device = await api.create()
    await api.post(device["id"], "connect")
    await events.wait(lambda: events.of(".qr", device["id"]))
    assert await sim_request(device["id"], "scan", phone="5215512345678") == {"ok": True}
    await api.wait_status(device["id"], "connected")
    return str(device["id"])


def messages(events: EventLog, device_id: str) -> list[dict[str, Any]]:
    return [m.data["data"] for m in events.of(".message", device_id)]


def media_events(events: EventLog, device_id: str) -> list[dict[str, Any]]:
    return [m.data["data"] for m in events.of(".media", device_id)]


async def test_qr_timeout_ends_the_pairing_and_connect_starts_a_new_one(
    api: Api, events: EventLog, start_worker: StartWorker, sim_request: SimRequest, db: asyncpg.Pool
) -> None:
    worker = await start_worker("w1")
    device = await api.create()
    await api.post(device["id"], "connect")
    first = await events.wait(lambda: events.of(".qr", device["id"]))
    assert await sim_request(device["id"], "qr_timeout") == {"ok": True}

    ended = await api.wait_status(device["id"], "disconnected")
    assert ended["last_error"] == QR_EXPIRED_MESSAGE
    desired = await db.fetchval(
        "SELECT desired_state FROM devices WHERE id = $1", uuid.UUID(device["id"])
    )
    assert desired == "disconnected"
    await events.wait(lambda: not worker.worker.sessions)
    resp = await api.client.get(f"/api/devices/{device['id']}/qr", headers=api.headers)
    assert resp.status_code == 404

    # connecting again pairs afresh: a new QR, and the error is gone
    await api.post(device["id"], "connect")
    again = await api.wait_status(device["id"], "qr_pending")
    assert again["last_error"] is None
    await events.wait(lambda: len(events.of(".qr", device["id"])) > len(first))
    # a linked device has no QR to time out
    await sim_request(device["id"], "scan", phone="5215512345678")
    await api.wait_status(device["id"], "connected")
    refused = await sim_request(device["id"], "qr_timeout")
    assert refused == {"ok": False, "error": "no QR code is pending on this device"}


async def test_lid_contacts_carry_the_phone_when_whatsapp_knows_it(
    api: Api, events: EventLog, start_worker: StartWorker, sim_request: SimRequest
) -> None:
    await start_worker("w1")
    device_id = await linked(api, events, sim_request)

    # phone unknown: the LID only
    reply = await sim_request(
        device_id,
        "inbound",
        **{"from": "5215511110000", "lid": "88001122", "phone_known": False, "body": "uno"},
    )
    assert reply == {"ok": True}
    first = (await events.wait(lambda: messages(events, device_id)))[0]
    assert first["chat_jid"] == "88001122@lid" and first["chat_lid"] == "88001122@lid"
    assert first["sender_jid"] == "88001122@lid"

    # told alongside (SenderAlt): phone form plus the LID
    await sim_request(
        device_id, "inbound", **{"from": "5215511110000", "lid": "88001122", "body": "dos"}
    )
    second = (await events.wait(lambda: messages(events, device_id)[1:]))[0]
    assert second["chat_jid"] == "5215511110000@s.whatsapp.net"
    assert second["chat_lid"] == "88001122@lid"
    assert second["sender_jid"] == "5215511110000@s.whatsapp.net"
    assert second["sender_lid"] == "88001122@lid"

    # learnt: later LID-only messages resolve to the phone, as the LID map does
    await sim_request(
        device_id,
        "inbound",
        **{"from": "5215511110000", "lid": "88001122", "phone_known": False, "body": "tres"},
    )
    third = (await events.wait(lambda: messages(events, device_id)[2:]))[0]
    assert third["chat_jid"] == "5215511110000@s.whatsapp.net"
    assert third["chat_lid"] == "88001122@lid"

    bad = await sim_request(device_id, "inbound", **{"from": "5215511110000", "lid": "1"})
    assert bad["ok"] is False and "lid" in bad["error"]


async def test_status_posts_never_leave_the_worker(
    api: Api, events: EventLog, start_worker: StartWorker, sim_request: SimRequest
) -> None:
    await start_worker("w1")
    device_id = await linked(api, events, sim_request)
    reply = await sim_request(
        device_id, "status_post", **{"from": "5215511112222", "body": "De vacaciones 🏖️"}
    )
    assert reply == {"ok": True}
    # a later message arrives, so the status post had its chance to
    await sim_request(device_id, "inbound", **{"from": "5215511112222", "body": "hola"})
    await events.wait(lambda: messages(events, device_id))
    assert [m["body"] for m in messages(events, device_id)] == ["hola"]
    assert not [m for m in messages(events, device_id) if m["chat_jid"] == "status@broadcast"]

    missing = await sim_request(device_id, "status_post", **{"from": "5215511112222"})
    assert missing["ok"] is False and "body" in missing["error"]


async def test_a_failed_download_is_retried_to_ready(
    api: Api,
    events: EventLog,
    start_worker: StartWorker,
    sim_request: SimRequest,
    nats_client: NatsClient,
) -> None:
    await start_worker("w1")
    device_id = await linked(api, events, sim_request)
    store = await ensure_object_store(nats_client.jetstream())
    reply = await sim_request(
        device_id,
        "inbound",
        **{
            "from": "5215511113333",
            "media": {
                "mime_type": "image/png",
                "file_name": "foto.png",
                "data_base64": base64.b64encode(PICTURE).decode(),
                "fail": 1,
            },
        },
    )
    assert reply == {"ok": True}
    message = (await events.wait(lambda: messages(events, device_id)))[0]
    info = message["media_info"]
    assert info["mime_type"] == "image/png" and info["file_name"] == "foto.png"
    assert info["download"]
    failed = (await events.wait(lambda: media_events(events, device_id)))[0]
    assert failed["status"] == "failed" and failed["retryable"] is True
    assert failed["wa_message_id"] == message["wa_message_id"]
    assert failed["error"] and failed["media"] is None

    retry = RetryMediaCommand(
        wa_message_id=message["wa_message_id"],
        chat_jid=message["chat_jid"],
        mime_type=info["mime_type"],
        download=info["download"],
    )
    answer = await request_json(nats_client, wa_command_subject(device_id), retry, timeout=5)
    assert answer["ok"] is True, answer
    ready = (await events.wait(lambda: media_events(events, device_id)[1:]))[0]
    assert ready["status"] == "ready"
    assert (await store.get(ready["media"]["object_key"])).data == PICTURE

    gone = await request_json(
        nats_client,
        wa_command_subject(device_id),
        retry.model_copy(update={"download": "not-a-token"}),
        timeout=5,
    )
    assert gone["ok"] is False and gone["error"]["code"] == "media_gone"


async def test_too_large_and_too_slow_downloads(
    api: Api, events: EventLog, start_worker: StartWorker, sim_request: SimRequest
) -> None:
    await start_worker("w1", media_max_bytes=1000, media_download_timeout_seconds=0.2)
    device_id = await linked(api, events, sim_request)
    data = base64.b64encode(PICTURE).decode()
    await sim_request(
        device_id,
        "inbound",
        **{
            "from": "5215511114444",
            "media": {"mime_type": "video/mp4", "data_base64": data, "size": 5000},
        },
    )
    too_large = (await events.wait(lambda: media_events(events, device_id)))[0]
    assert too_large["status"] == "too_large" and too_large["retryable"] is False
    assert messages(events, device_id)[0]["media_info"]["size"] == 5000

    await sim_request(
        device_id,
        "inbound",
        **{
            "from": "5215511114444",
            "media": {"mime_type": "image/png", "data_base64": data, "delay": 30},
        },
    )
    slow = (await events.wait(lambda: media_events(events, device_id)[1:]))[0]
    assert slow["status"] == "failed" and slow["retryable"] is True
    assert slow["error"] == "The download timed out"
