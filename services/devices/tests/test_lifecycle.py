"""A device's whole life with an in-process worker and the simulator driver."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import asyncpg
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from pydantic import BaseModel

from clarin_common.events import (
    MediaRef,
    PairPhoneCommand,
    SendMediaCommand,
    SendTextCommand,
    wa_command_subject,
)
from clarin_common.nats import ensure_object_store, request_json
from clarin_devices.worker.session import QR_EXPIRED_MESSAGE
from clarin_devkit.testing import eventually
from services.devices.tests.helpers import (
    Api,
    EventLog,
    Ledger,
    MakePaired,
    SimRequest,
    StartWorker,
)


async def command(nc: NatsClient, device_id: str, cmd: BaseModel) -> dict[str, Any]:
    return await request_json(nc, wa_command_subject(device_id), cmd, timeout=5)


async def test_whole_lifecycle(
    api: Api,
    events: EventLog,
    start_worker: StartWorker,
    sim_request: SimRequest,
    nats_client: NatsClient,
) -> None:
    worker = await start_worker("w1")
    device = await api.create()
    device_id = device["id"]

    # connect → qr_pending, QR events, GET /qr
    resp = await api.post(device_id, "connect")
    assert resp.status_code == 202 and resp.json()["status"] == "connecting"
    await api.wait_status(device_id, "qr_pending")
    qr_events = await events.wait(lambda: events.of(".qr", device_id))
    qr = qr_events[0].data
    assert qr_events[0].headers["Nats-Msg-Id"] == qr["id"]
    assert qr["data"]["code"].startswith("2@")
    resp = await api.client.get(f"/api/devices/{device_id}/qr", headers=api.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["code"] == qr["data"]["code"]

    # pairing by phone code works too while the QR is pending
    resp = await api.post(device_id, "pair-phone", json={"phone": "+52 1 55 1234 5678"})
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["pairing_code"]) == 8

    # scan → connected as {phone}@s.whatsapp.net
    assert await sim_request(device_id, "scan", phone="5215512345678") == {"ok": True}
    connected = await api.wait_status(device_id, "connected")
    assert connected["jid"] == "5215512345678@s.whatsapp.net"
    assert connected["phone"] == "5215512345678"
    assert connected["last_seen_at"] is not None
    await events.wait(lambda: "connected" in events.app_statuses(device_id))
    assert events.app_statuses(device_id) == ["connecting", "qr_pending", "connected"]
    status_event = events.of(".status", device_id)[-1].data["data"]
    assert status_event["worker_id"] == worker.id and status_event["status"] == "connected"
    resp = await api.client.get(f"/api/devices/{device_id}/qr", headers=api.headers)
    assert resp.status_code == 404

    # inbound message → wa.evt message with Nats-Msg-Id
    reply = await sim_request(
        device_id, "inbound", **{"from": "5215599998888", "push_name": "Ana", "body": "Hola"}
    )
    assert reply == {"ok": True}
    inbound = (await events.wait(lambda: events.of(".message", device_id)))[0]
    assert inbound.subject == f"wa.evt.{api.account_id}.{device_id}.message"
    assert inbound.headers["Nats-Msg-Id"] == inbound.data["id"]
    message = inbound.data["data"]
    assert message["direction"] == "in" and message["body"] == "Hola"
    assert message["chat_jid"] == "5215599998888@s.whatsapp.net"
    assert message["push_name"] == "Ana" and message["type"] == "text"
    assert message["wa_message_id"].startswith("3EB0")

    # send_text → reply, sent, echo, delivered and read receipts
    result = await command(
        nats_client,
        device_id,
        SendTextCommand(message_id="m-1", client_id="c-1", to="5215599998888", body="Hi Ana"),
    )
    assert result["ok"] is True, result
    wa_id = result["result"]["wa_message_id"]
    assert result["result"]["sent_at"]
    sent = (await events.wait(lambda: events.of(".sent", device_id)))[0].data["data"]
    assert sent["wa_message_id"] == wa_id and sent["status"] == "sent"
    assert sent["message_id"] == "m-1" and sent["client_id"] == "c-1"
    echo = await events.wait(
        lambda: [
            m for m in events.of(".message", device_id) if m.data["data"]["direction"] == "out"
        ]
    )
    assert echo[0].data["data"]["wa_message_id"] == wa_id
    assert echo[0].data["data"]["message_id"] == "m-1"
    assert echo[0].data["data"]["sender_jid"] == "5215512345678@s.whatsapp.net"
    await events.wait(lambda: len(events.of(".receipt", device_id)) == 2)
    receipts = [r.data["data"] for r in events.of(".receipt", device_id)]
    assert [r["status"] for r in receipts] == ["delivered", "read"]
    assert all(r["wa_message_ids"] == [wa_id] for r in receipts)
    # a receipt driven by hand
    assert await sim_request(device_id, "receipt", wa_message_id=wa_id, status="played") == {
        "ok": True
    }
    await events.wait(lambda: len(events.of(".receipt", device_id)) == 3)

    # drop → the worker reconnects by itself, without a QR
    qr_count = len(events.of(".qr", device_id))
    assert await sim_request(device_id, "drop") == {"ok": True}
    await events.wait(lambda: events.app_statuses(device_id)[-2:] == ["connecting", "connected"])
    assert (await api.get(device_id))["status"] == "connected"
    assert len(events.of(".qr", device_id)) == qr_count

    # disconnect → keeps the session; connect again → connected with no QR
    resp = await api.post(device_id, "disconnect")
    assert resp.status_code == 202 and resp.json()["status"] == "disconnected"
    await events.wait(lambda: not worker.worker.sessions)
    # nobody listens: NATS says so at once (a listener that did not answer would
    # end in a timeout instead). The session leaves ``sessions`` before its command
    # subscription is gone, so a request may still find it for a moment.
    assert await eventually(lambda: _no_responders(nats_client, device_id), timeout=5)
    resp = await api.post(device_id, "connect")
    assert resp.status_code == 202
    again = await api.wait_status(device_id, "connected")
    assert again["jid"] == "5215512345678@s.whatsapp.net"
    assert len(events.of(".qr", device_id)) == qr_count

    # the phone unlinks → logged_out, session gone
    assert await sim_request(device_id, "logout") == {"ok": True}
    gone = await api.wait_status(device_id, "logged_out")
    assert gone["jid"] is None
    await events.wait(lambda: not worker.worker.sessions)
    # and the next connect needs a new QR
    await api.post(device_id, "connect")
    await api.wait_status(device_id, "qr_pending")
    await events.wait(lambda: len(events.of(".qr", device_id)) > qr_count)


async def _no_responders(nc: NatsClient, device_id: str) -> bool:
    try:
        await nc.request(wa_command_subject(device_id), b"{}", timeout=2)
    except NoRespondersError:
        return True
    return False


async def test_send_to_a_device_without_session_is_409_fast(
    api: Api, start_worker: StartWorker, nats_client: NatsClient
) -> None:
    await start_worker("w1")
    device = await api.create()
    assert await _no_responders(nats_client, device["id"])
    # told by NATS's no-responders, not by waiting out the command timeout (503)
    resp = await api.post(device["id"], "pair-phone", json={"phone": "5215512345678"})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "device_not_connected"


async def test_qr_rotates_and_gives_up(
    api: Api, events: EventLog, start_worker: StartWorker, db: asyncpg.Pool
) -> None:
    await start_worker("w1", sim_qr_interval=0.15, sim_qr_max_codes=3)
    device = await api.create()
    await api.post(device["id"], "connect")
    await api.wait_status(device["id"], "disconnected", timeout=5)
    await events.wait(
        lambda: events.app_statuses(device["id"]) == ["connecting", "qr_pending", "disconnected"]
    )
    codes = [q.data["data"]["code"] for q in events.of(".qr", device["id"])]
    assert len(codes) == 3 and len(set(codes)) == 3
    gave_up = await api.get(device["id"])
    assert gave_up["last_error"] == QR_EXPIRED_MESSAGE
    desired = await db.fetchval(
        "SELECT desired_state FROM devices WHERE id = $1", uuid.UUID(device["id"])
    )
    assert desired == "disconnected"  # it waits for the user to ask again
    resp = await api.client.get(f"/api/devices/{device['id']}/qr", headers=api.headers)
    assert resp.status_code == 404


async def test_a_logout_whatsapp_never_heard_of_says_the_phone_still_lists_it(
    api: Api, events: EventLog, start_worker: StartWorker, sim_request: SimRequest
) -> None:
    worker = await start_worker("w1")
    device = await api.create()
    await api.post(device["id"], "connect")
    await events.wait(lambda: events.of(".qr", device["id"]))
    await sim_request(device["id"], "scan", phone="5215512345678")
    await api.wait_status(device["id"], "connected")
    assert await sim_request(device["id"], "unlink_fails") == {"ok": True}

    assert (await api.post(device["id"], "logout")).status_code == 202

    async def told() -> dict[str, Any] | None:
        found = await api.get(device["id"])
        return found if found["last_error"] else None

    ended: dict[str, Any] | None = await eventually(told, timeout=10)
    assert ended is not None and ended["status"] == "logged_out"
    assert "the phone still lists this device under Linked devices" in ended["last_error"]
    await events.wait(lambda: not worker.worker.sessions)
    # connecting again pairs afresh and clears the warning
    await api.post(device["id"], "connect")
    paired = await api.wait_status(device["id"], "qr_pending")
    assert paired["last_error"] is None


async def test_logout_and_delete_over_the_api(
    api: Api, events: EventLog, start_worker: StartWorker, sim_request: SimRequest
) -> None:
    worker = await start_worker("w1")
    device = await api.create()
    await api.post(device["id"], "connect")
    await events.wait(lambda: events.of(".qr", device["id"]))
    await sim_request(device["id"], "scan", phone="5215512345678")
    await api.wait_status(device["id"], "connected")

    resp = await api.post(device["id"], "logout")
    assert resp.status_code == 202
    assert resp.json()["status"] == "logged_out" and resp.json()["jid"] is None
    await events.wait(lambda: not worker.worker.sessions)
    await events.wait(lambda: events.app_statuses(device["id"]).count("logged_out") == 1)

    # delete a connected device: it is logged out first, then gone
    await api.post(device["id"], "connect")
    await events.wait(lambda: len(events.of(".qr", device["id"])) == 2)
    await sim_request(device["id"], "scan", phone="5215512345678")
    await api.wait_status(device["id"], "connected")
    resp = await api.client.delete(f"/api/devices/{device['id']}", headers=api.headers)
    assert resp.status_code == 204
    await events.wait(lambda: not worker.worker.sessions)
    await events.wait(lambda: events.app_statuses(device["id"])[-1] == "logged_out")
    try:
        await sim_request(device["id"], "inbound", **{"from": "5215599998888", "body": "x"})
    except NoRespondersError:
        pass
    else:
        raise AssertionError("the session should be gone")


async def test_media_both_ways(
    api: Api,
    events: EventLog,
    start_worker: StartWorker,
    sim_request: SimRequest,
    nats_client: NatsClient,
) -> None:
    await start_worker("w1")
    device = await api.create()
    await api.post(device["id"], "connect")
    await events.wait(lambda: events.of(".qr", device["id"]))
    await sim_request(device["id"], "scan", phone="5215512345678")
    await api.wait_status(device["id"], "connected")
    store = await ensure_object_store(nats_client.jetstream())

    picture = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    reply = await sim_request(
        device["id"],
        "inbound",
        **{
            "from": "5215599998888",
            "body": "look",
            "media": {
                "mime_type": "image/png",
                "file_name": "a.png",
                "data_base64": base64.b64encode(picture).decode(),
            },
        },
    )
    assert reply == {"ok": True}
    message = (await events.wait(lambda: events.of(".message", device["id"])))[0].data["data"]
    assert message["type"] == "image" and message["body"] == "look"
    # announced first, the file follows in a media event
    assert message["media"] is None
    assert message["media_info"]["mime_type"] == "image/png"
    assert message["media_info"]["size"] == len(picture)
    done = (await events.wait(lambda: events.of(".media", device["id"])))[0].data["data"]
    assert done["wa_message_id"] == message["wa_message_id"] and done["status"] == "ready"
    ref = done["media"]
    assert ref["mime_type"] == "image/png" and ref["size"] == len(picture)
    assert (await store.get(ref["object_key"])).data == picture

    bad = await sim_request(
        device["id"], "inbound", **{"from": "5215599998888", "media": {"mime_type": "x/y"}}
    )
    assert bad["ok"] is False and "data_base64" in bad["error"]

    await store.put("out/test.pdf", b"%PDF-1.4")
    result = await command(
        nats_client,
        device["id"],
        SendMediaCommand(
            message_id="m-2",
            to="5215599998888@s.whatsapp.net",
            media_type="document",
            media=MediaRef(object_key="out/test.pdf", mime_type="application/pdf", size=8),
            caption="the offer",
        ),
    )
    assert result["ok"] is True, result
    echo = await events.wait(
        lambda: [
            m.data["data"]
            for m in events.of(".message", device["id"])
            if m.data["data"]["direction"] == "out"
        ]
    )
    assert echo[0]["type"] == "document" and echo[0]["body"] == "the offer"
    assert echo[0]["media"]["object_key"] == "out/test.pdf"

    missing = await command(
        nats_client,
        device["id"],
        SendMediaCommand(
            message_id="m-3",
            to="5215599998888",
            media_type="image",
            media=MediaRef(object_key="nope", mime_type="image/png", size=1),
        ),
    )
    assert missing == {
        "ok": False,
        "result": None,
        "error": {"code": "media_not_found", "message": "media 'nope' is not in the store"},
    }


async def test_bad_commands_and_sim_actions(
    api: Api,
    events: EventLog,
    start_worker: StartWorker,
    sim_request: SimRequest,
    nats_client: NatsClient,
) -> None:
    await start_worker("w1")
    device = await api.create()
    await api.post(device["id"], "connect")
    await events.wait(lambda: events.of(".qr", device["id"]))

    # while the QR is pending: sends answer device_not_connected, inbound is refused
    result = await command(
        nats_client, device["id"], SendTextCommand(message_id="m", to="5215599998888", body="x")
    )
    assert result["ok"] is False and result["error"]["code"] == "device_not_connected"
    short = await command(nats_client, device["id"], PairPhoneCommand(phone="+52 12"))
    assert short["error"] == {
        "code": "invalid_phone",
        "message": "a phone number in international format: 7 to 15 digits",
    }
    refused = await sim_request(device["id"], "inbound", **{"from": "5215599998888", "body": "x"})
    assert refused == {"ok": False, "error": "the device is not connected"}
    assert (await sim_request(device["id"], "scan", phone="12"))["ok"] is False
    assert (await sim_request(device["id"], "nonsense"))["ok"] is False

    await sim_request(device["id"], "scan", phone="5215512345678")
    await api.wait_status(device["id"], "connected")
    garbage = await nats_client.request(wa_command_subject(device["id"]), b"{}", timeout=3)
    assert json.loads(garbage.data)["error"]["code"] == "invalid_command"
    result = await command(
        nats_client, device["id"], SendTextCommand(message_id="m", to="12", body="x")
    )
    assert result["error"]["code"] == "invalid_recipient"
    assert (await sim_request(device["id"], "scan", phone="5215512345678"))["ok"] is False
    unknown = await sim_request(device["id"], "receipt", wa_message_id="nope", status="read")
    assert unknown["ok"] is False


async def test_sends_are_paced_per_device(
    api: Api,
    events: EventLog,
    start_worker: StartWorker,
    sim_request: SimRequest,
    nats_client: NatsClient,
) -> None:
    import asyncio

    await start_worker("w1", send_rate_per_second=10.0, send_jitter=0.0)
    device = await api.create()
    await api.post(device["id"], "connect")
    await events.wait(lambda: events.of(".qr", device["id"]))
    await sim_request(device["id"], "scan", phone="5215512345678")
    await api.wait_status(device["id"], "connected")
    started = time.monotonic()
    results = await asyncio.gather(
        *(
            command(
                nats_client,
                device["id"],
                SendTextCommand(message_id=f"m{i}", to="5215599998888", body=str(i)),
            )
            for i in range(5)
        )
    )
    elapsed = time.monotonic() - started
    assert all(r["ok"] for r in results)
    assert len({r["result"]["wa_message_id"] for r in results}) == 5
    assert elapsed >= 0.35  # 5 sends at 10/s: 4 intervals of 0.1 s


async def test_failed_connects_are_retried_with_backoff(
    api: Api, events: EventLog, start_worker: StartWorker
) -> None:
    worker = await start_worker("w1", reconnect_base_seconds=0.1)
    worker.driver.fail_connects = 3
    device = await api.create()
    started = time.monotonic()
    await api.post(device["id"], "connect")
    await api.wait_status(device["id"], "qr_pending")
    elapsed = time.monotonic() - started
    assert worker.driver.connect_calls == 4
    # backoff 0.1·2^n with jitter in [0.5, 1]: at least 0.05 + 0.1 + 0.2
    assert elapsed >= 0.35
    await events.wait(
        lambda: events.app_statuses(device["id"]) == ["connecting", "error", "qr_pending"]
    )
    errors = [e.data["data"]["device"]["last_error"] for e in events.of(".device_status")]
    assert "failed to dial whatsapp web websocket" in errors
    assert (await api.get(device["id"]))["last_error"] is None


async def test_a_lost_stored_session_means_logged_out(
    api: Api, events: EventLog, start_worker: StartWorker, db: asyncpg.Pool
) -> None:
    await start_worker("w1")
    device = await api.create()
    await db.execute(
        "UPDATE devices SET jid = '0000@s.whatsapp.net' WHERE id = $1", uuid.UUID(device["id"])
    )
    await api.post(device["id"], "connect")
    gone = await api.wait_status(device["id"], "logged_out")
    assert gone["jid"] is None
    assert gone["last_error"] == "No stored WhatsApp session"


async def test_a_restarted_worker_adopts_its_own_leases(
    api: Api, events: EventLog, start_worker: StartWorker, make_paired: MakePaired, ledger: Ledger
) -> None:
    long_leases = {"lease_ttl_seconds": 30, "lease_renew_interval_seconds": 5}
    first = await start_worker("w1", **long_leases)
    devices = await make_paired(5)
    for device_id in devices:
        await api.post(device_id, "connect")
    await events.wait(
        lambda: (
            len(first.worker.sessions) == 5
            and all(s.connected for s in first.worker.sessions.values())
        )
    )
    await first.crash(ledger)
    restarted = await start_worker("w1", **long_leases)
    # far sooner than the 30 s the leases would take to expire
    await events.wait(
        lambda: (
            len(restarted.worker.sessions) == 5
            and all(s.connected for s in restarted.worker.sessions.values())
        ),
        timeout=5,
    )
