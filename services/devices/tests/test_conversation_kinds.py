"""Issue 12 through the simulator and an in-process worker: replies, reactions,
edits, deletes, typing and history reach NATS as their own kinds, and our own
reactions, edits, deletes and typing reach the phone and come back confirmed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client as NatsClient

from clarin_common.events import (
    EditCommand,
    MessageRef,
    ReactCommand,
    RevokeCommand,
    SendTextCommand,
    TypingCommand,
    wa_command_subject,
)
from clarin_common.nats import request_json
from services.devices.tests.helpers import Api, EventLog, SimRequest, StartWorker

CONTACT = "5215511113333"
CONTACT_JID = f"{CONTACT}@s.whatsapp.net"


async def linked(api: Api, events: EventLog, sim_request: SimRequest) -> str:
    device = await api.create()
    await api.post(device["id"], "connect")
    await events.wait(lambda: events.of(".qr", device["id"]))
    assert await sim_request(device["id"], "scan", phone="5215512345678") == {"ok": True}
    await api.wait_status(device["id"], "connected")
    return str(device["id"])


def of(events: EventLog, kind: str, device_id: str) -> list[dict[str, Any]]:
    return [m.data["data"] for m in events.of(f".{kind}", device_id)]


async def command(nc: NatsClient, device_id: str, cmd: Any) -> dict[str, Any]:
    reply: dict[str, Any] = await request_json(nc, wa_command_subject(device_id), cmd, timeout=5)
    return reply


async def test_the_contact_replies_reacts_edits_deletes_and_types(
    api: Api, events: EventLog, start_worker: StartWorker, sim_request: SimRequest
) -> None:
    await start_worker("w1")
    device_id = await linked(api, events, sim_request)
    first = {"from": CONTACT, "body": "¿Tienen envío?", "wa_message_id": "WA-Q-1"}
    assert await sim_request(device_id, "inbound", **first) == {"ok": True}
    reply = {"from": CONTACT, "body": "a Monterrey", "reply_to": "WA-Q-1"}
    assert await sim_request(device_id, "inbound", **reply) == {"ok": True}
    quoted = (await events.wait(lambda: of(events, "message", device_id)[1:]))[0]
    assert quoted["reply_to"]["wa_message_id"] == "WA-Q-1"
    assert quoted["reply_to"]["body"] == "¿Tienen envío?"
    assert quoted["reply_to"]["from_me"] is False

    react = {"from": CONTACT, "wa_message_id": "WA-Q-1", "emoji": "👍"}
    assert await sim_request(device_id, "react", **react) == {"ok": True}
    reaction = (await events.wait(lambda: of(events, "reaction", device_id)))[0]
    assert reaction["emoji"] == "👍" and reaction["sender_jid"] == CONTACT_JID
    assert reaction["from_me"] is False and reaction["wa_message_id"] == "WA-Q-1"

    edit = {"wa_message_id": "WA-Q-1", "body": "¿Tienen envío a domicilio?"}
    assert await sim_request(device_id, "edit", **edit) == {"ok": True}
    edited = (await events.wait(lambda: of(events, "edit", device_id)))[0]
    assert edited["body"] == "¿Tienen envío a domicilio?" and edited["chat_jid"] == CONTACT_JID

    assert await sim_request(device_id, "revoke", wa_message_id="WA-Q-1") == {"ok": True}
    revoked = (await events.wait(lambda: of(events, "revoke", device_id)))[0]
    assert revoked["wa_message_id"] == "WA-Q-1" and revoked["from_me"] is False

    typing = {"from": CONTACT, "state": "composing"}
    assert await sim_request(device_id, "typing", **typing) == {"ok": True}
    presence = (await events.wait(lambda: of(events, "presence", device_id)))[0]
    assert presence["state"] == "composing" and presence["chat_jid"] == CONTACT_JID

    # a contact cannot edit what we sent, nor an unknown message without `from`
    refused = await sim_request(device_id, "edit", wa_message_id="NOPE", body="x")
    assert refused["ok"] is False and "from" in refused["error"]


async def test_our_reply_reaction_edit_delete_and_typing_reach_the_phone(
    api: Api,
    events: EventLog,
    start_worker: StartWorker,
    sim_request: SimRequest,
    nats_client: NatsClient,
) -> None:
    await start_worker("w1")
    device_id = await linked(api, events, sim_request)
    await sim_request(
        device_id, "inbound", **{"from": CONTACT, "body": "hola", "wa_message_id": "IN-1"}
    )
    sent = await command(
        nats_client,
        device_id,
        SendTextCommand(
            message_id="00000000-0000-4000-8000-000000000001",
            to=CONTACT,
            body="¡Hola! ¿En qué te ayudo?",
            reply_to=MessageRef(wa_message_id="IN-1", sender_jid=CONTACT_JID, body="hola"),
        ),
    )
    assert sent["ok"] is True
    ours = sent["result"]["wa_message_id"]
    echo = (await events.wait(lambda: of(events, "message", device_id)[1:]))[0]
    assert echo["reply_to"]["wa_message_id"] == "IN-1" and echo["direction"] == "out"

    target = MessageRef(wa_message_id="IN-1", sender_jid=CONTACT_JID)
    react = ReactCommand(message_id="m-in", chat_jid=CONTACT_JID, target=target, emoji="❤️")
    assert (await command(nats_client, device_id, react))["ok"] is True
    edit = EditCommand(
        message_id="m-out", chat_jid=CONTACT_JID, wa_message_id=ours, body="¡Hola! ¿Te ayudo?"
    )
    assert (await command(nats_client, device_id, edit))["ok"] is True
    typing = TypingCommand(chat_jid=CONTACT_JID, state="composing")
    assert (await command(nats_client, device_id, typing)) == {
        "ok": True,
        "result": {},
        "error": None,
    }
    revoke = RevokeCommand(message_id="m-out", chat_jid=CONTACT_JID, wa_message_id=ours)
    assert (await command(nats_client, device_id, revoke))["ok"] is True

    # the phone saw each of them, in order
    seen = (await sim_request(device_id, "phone"))["seen"]
    assert [s["kind"] for s in seen] == ["reply", "reaction", "edit", "typing", "revoke"]
    assert seen[0]["reply_to"] == "IN-1" and seen[1]["emoji"] == "❤️"
    assert seen[2]["body"] == "¡Hola! ¿Te ayudo?" and seen[3]["state"] == "composing"
    # and each came back confirmed as an event of our own
    reaction = (await events.wait(lambda: of(events, "reaction", device_id)))[0]
    assert reaction["from_me"] is True and reaction["message_id"] == "m-in"
    edited = (await events.wait(lambda: of(events, "edit", device_id)))[0]
    assert edited["from_me"] is True and edited["wa_message_id"] == ours
    revoked = (await events.wait(lambda: of(events, "revoke", device_id)))[0]
    assert revoked["from_me"] is True and revoked["message_id"] == "m-out"

    # WhatsApp lets a number edit or delete only what it sent
    not_ours = EditCommand(message_id="m-in", chat_jid=CONTACT_JID, wa_message_id="IN-1", body="x")
    refused = await command(nats_client, device_id, not_ours)
    assert refused["ok"] is False and refused["error"]["code"] == "not_own_message"


async def test_history_is_published_in_parts_with_last_on_the_final_one(
    api: Api, events: EventLog, start_worker: StartWorker, sim_request: SimRequest
) -> None:
    await start_worker("w1")
    device_id = await linked(api, events, sim_request)
    start = datetime.now(UTC) - timedelta(days=3)
    # ~1.2 MB of messages: more than one NATS message can carry
    body = "x" * 1000
    chats = [
        {
            "from": f"52155100000{i:02d}",
            "push_name": f"Cliente {i}",
            "messages": [
                {
                    "body": body,
                    "from_me": j % 3 == 0,
                    "at": (start + timedelta(minutes=j)).isoformat(),
                }
                for j in range(300)
            ],
        }
        for i in range(4)
    ]
    # the control request itself must stay under the NATS payload limit: two calls
    assert await sim_request(device_id, "history", chats=chats[:2], sync_id="s1", last=False) == {
        "ok": True
    }
    assert await sim_request(device_id, "history", chats=chats[2:], sync_id="s1") == {"ok": True}

    def parts() -> list[dict[str, Any]]:
        got = of(events, "history", device_id)
        return got if sum(len(p["messages"]) for p in got) == 1200 else []

    got = await events.wait(parts)
    assert len(got) >= 3
    assert {p["sync_id"] for p in got} == {"s1"}
    assert [p["last"] for p in got].count(True) == 1 and got[-1]["last"] is True
    assert sum(len(p["chats"]) for p in got) == 4
    first = got[0]["messages"][0]
    assert first["direction"] == "out" and first["sent_at"].startswith(start.date().isoformat())
