"""The whole conversation through the neonize driver, offline (issue 12): what
a phone sends besides messages — quoted replies, reactions, edits, deletes,
typing and presence, the history after linking — fed to the host's real
handlers as neonize's own protobuf objects, and what we send back (reply,
react, edit, revoke, typing) built by neonize's own builders up to the socket
(there is none here: the test host records what would go out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import pytest

from clarin_common.events import (
    MessageRef,
    TypingState,
    WaEdit,
    WaHistory,
    WaPresence,
    WaReaction,
    WaRevoke,
)
from clarin_devices.worker.drivers import DriverError
from clarin_devices.worker.drivers.neonize_driver import NeonizeDriver
from clarin_devkit.testing import eventually
from clarin_devkit.testing.plugin import TestServers
from services.devices.tests.helpers import Api, EventLog

from . import test_neonize_driver as base
from .test_neonize_driver import (
    LID,
    PHONE,
    BlackHole,
    MakeDriver,
    Recorder,
    held,
    inject,
    linked_devices,
    message_ev,
)

# the driver module's fixtures, under their own names
black_hole = base.black_hole
make_driver = base.make_driver

pytestmark = pytest.mark.usefixtures("clean_state")

GROUP = {"User": "120363025555555555", "Server": "g.us"}
ADMIN = {"User": "5215500000001", "Server": "s.whatsapp.net"}
AUTHOR = {"User": "5215500000002", "Server": "s.whatsapp.net"}


def of(events: Recorder, device: str, kind: type[Any]) -> list[Any]:
    return [e for e in events.others[device] if isinstance(e, kind)]


async def linked_device(driver: NeonizeDriver, database_url: str, events: Recorder) -> str:
    [device] = await linked_devices(driver, database_url, events, 1)
    return device


async def test_replies_reactions_edits_and_deletes_become_their_own_events(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=3.0
    )
    events = Recorder()
    device = await linked_device(driver, test_servers.database_url, events)
    us = held(driver, device).jid
    assert us is not None
    our_number = us.split(":")[0].split("@")[0]

    # a reply quoting one of our messages, and one quoting a photo we never stored
    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev(
            "REPLY1",
            {"Chat": PHONE, "Sender": PHONE},
            {
                "extendedTextMessage": {
                    "text": "sí, me interesa",
                    "contextInfo": {
                        "stanzaID": "OURS1",
                        "participant": f"{our_number}@s.whatsapp.net",
                        "quotedMessage": {"conversation": "¿Le interesa la oferta?"},
                    },
                }
            },
        ),
    )
    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev(
            "REPLY2",
            {"Chat": PHONE, "Sender": PHONE},
            {
                "imageMessage": {
                    "mimetype": "image/jpeg",
                    "caption": "esta otra",
                    "contextInfo": {
                        "stanzaID": "NEVERSEEN",
                        "participant": "5215512345678@s.whatsapp.net",
                        "quotedMessage": {"imageMessage": {"caption": "la roja"}},
                    },
                }
            },
        ),
    )
    # a reaction, then the same contact taking it back (empty text)
    for msg_id, emoji in (("REACT1", "👍"), ("REACT2", "")):
        await inject(
            driver,
            device,
            "MessageEv",
            fields=message_ev(
                msg_id,
                {"Chat": PHONE, "Sender": PHONE},
                {
                    "reactionMessage": {
                        "key": {
                            "remoteJID": "5215512345678@s.whatsapp.net",
                            "fromMe": False,
                            "ID": "OURS1",
                        },
                        "text": emoji,
                        "senderTimestampMS": "1700000005000",
                    }
                },
            ),
        )
    # an edit as whatsmeow hands it over (unwrapped, IsEdit) and as the raw
    # editedMessage wrapper, of messages we may never have seen
    edit = {
        "protocolMessage": {
            "type": "MESSAGE_EDIT",
            "key": {"remoteJID": "5215512345678@s.whatsapp.net", "ID": "THEIRS1"},
            "editedMessage": {"conversation": "mañana a las 10"},
            "timestampMS": "1700000009000",
        }
    }
    await inject(
        driver,
        device,
        "MessageEv",
        fields={
            **message_ev("EDIT1", {"Chat": PHONE, "Sender": PHONE}, edit),
            "IsEdit": True,
        },
    )
    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev(
            "EDIT2",
            {"Chat": PHONE, "Sender": PHONE},
            {
                "editedMessage": {
                    "message": {
                        **edit,
                        "protocolMessage": {
                            **edit["protocolMessage"],
                            "key": {"ID": "UNKNOWN9"},
                            "editedMessage": {"extendedTextMessage": {"text": "corregido"}},
                        },
                    }
                }
            },
        ),
    )
    # deletes for everyone: by the contact, and by a group admin of someone else's
    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev(
            "REVOKE1",
            {"Chat": PHONE, "Sender": PHONE},
            {"protocolMessage": {"type": "REVOKE", "key": {"ID": "THEIRS2"}}},
        ),
    )
    await inject(
        driver,
        device,
        "MessageEv",
        fields={
            **message_ev(
                "REVOKE2",
                {"Chat": GROUP, "Sender": ADMIN, "IsGroup": True},
                {
                    "protocolMessage": {
                        "type": "REVOKE",
                        "key": {
                            "remoteJID": "120363025555555555@g.us",
                            "ID": "GROUPMSG",
                            "participant": "5215500000002@s.whatsapp.net",
                        },
                    }
                },
            ),
        },
    )
    # a reaction from a contact who writes from a LID, with their phone along
    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev(
            "REACT3",
            {"Chat": LID, "Sender": LID, "SenderAlt": PHONE, "AddressingMode": "LID"},
            {"reactionMessage": {"key": {"ID": "OURS1"}, "text": "❤️"}},
        ),
    )
    # our own number edits a message from the phone (another device of ours)
    await inject(
        driver,
        device,
        "MessageEv",
        fields={
            **message_ev(
                "EDIT3",
                {
                    "Chat": PHONE,
                    "Sender": {"User": our_number, "Server": "s.whatsapp.net"},
                    "IsFromMe": True,
                },
                {
                    "protocolMessage": {
                        "type": "MESSAGE_EDIT",
                        "key": {"ID": "OURS1", "fromMe": True},
                        "editedMessage": {"conversation": "¿Le interesa la oferta de hoy?"},
                    }
                },
            ),
            "IsEdit": True,
        },
    )
    # protocol messages that are nobody's business: nothing at all
    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev(
            "NOTIF",
            {"Chat": PHONE, "Sender": PHONE},
            {"protocolMessage": {"type": "EPHEMERAL_SETTING", "key": {"ID": "X"}}},
        ),
    )
    await inject(
        driver,
        device,
        "MessageEv",
        fields=message_ev("LAST", {"Chat": PHONE, "Sender": PHONE}, {"conversation": "fin"}),
    )

    await eventually(
        lambda: any(m.wa_message_id == "LAST" for m, _ in events.messages[device]), timeout=10
    )
    by_id = {m.wa_message_id: m for m, _ in events.messages[device]}
    assert set(by_id) == {"REPLY1", "REPLY2", "LAST"}  # the rest are not messages
    reply = by_id["REPLY1"]
    assert reply.body == "sí, me interesa" and reply.reply_to is not None
    assert reply.reply_to.wa_message_id == "OURS1" and reply.reply_to.from_me
    assert reply.reply_to.body == "¿Le interesa la oferta?"
    unknown = by_id["REPLY2"].reply_to
    assert unknown is not None and unknown.wa_message_id == "NEVERSEEN"
    assert unknown.type == "image" and unknown.body == "la roja"
    assert unknown.sender_jid == "5215512345678@s.whatsapp.net" and not unknown.from_me

    reactions = of(events, device, WaReaction)
    assert [(r.reaction_id, r.wa_message_id, r.emoji) for r in reactions] == [
        ("REACT1", "OURS1", "👍"),
        ("REACT2", "OURS1", ""),
        ("REACT3", "OURS1", "❤️"),
    ]
    assert reactions[0].sender_jid == "5215512345678@s.whatsapp.net"
    assert not reactions[0].from_me
    assert reactions[0].reacted_at == datetime(2023, 11, 14, 22, 13, 25, tzinfo=UTC)
    assert reactions[2].chat_jid == "5215512345678@s.whatsapp.net"
    assert reactions[2].chat_lid == "123456789012345@lid"

    edits = of(events, device, WaEdit)
    assert [(e.edit_id, e.wa_message_id, e.body) for e in edits][:2] == [
        ("EDIT1", "THEIRS1", "mañana a las 10"),
        ("EDIT2", "UNKNOWN9", "corregido"),
    ]
    assert edits[0].edited_at == datetime(2023, 11, 14, 22, 13, 29, tzinfo=UTC)
    ours = [e for e in of(events, device, WaEdit) if e.edit_id == "EDIT3"]
    assert len(ours) == 1 and ours[0].from_me and ours[0].wa_message_id == "OURS1"
    assert ours[0].chat_jid == "5215512345678@s.whatsapp.net"
    assert ours[0].body == "¿Le interesa la oferta de hoy?"
    assert edits[0].sender_jid == "5215512345678@s.whatsapp.net" and not edits[0].from_me

    revokes = of(events, device, WaRevoke)
    assert [(r.revoke_id, r.wa_message_id) for r in revokes] == [
        ("REVOKE1", "THEIRS2"),
        ("REVOKE2", "GROUPMSG"),
    ]
    assert revokes[0].sender_jid == "5215512345678@s.whatsapp.net"
    by_admin = revokes[1]
    assert by_admin.chat_jid == "120363025555555555@g.us"
    assert by_admin.sender_jid == "5215500000001@s.whatsapp.net"  # the admin, not the author
    # the order WhatsApp sent them in is kept
    kinds = [type(e).__name__ for e in events.others[device]]
    assert kinds == [
        "WaReaction",
        "WaReaction",
        "WaEdit",
        "WaEdit",
        "WaRevoke",
        "WaRevoke",
        "WaReaction",
        "WaEdit",
    ]


async def test_typing_and_presence_are_relayed(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=3.0
    )
    events = Recorder()
    device = await linked_device(driver, test_servers.database_url, events)

    await inject(
        driver,
        device,
        "ChatPresenceEv",
        fields={"MessageSource": {"Chat": PHONE, "Sender": PHONE}, "State": "COMPOSING"},
    )
    await inject(
        driver,
        device,
        "ChatPresenceEv",
        fields={
            "MessageSource": {"Chat": LID, "Sender": LID, "SenderAlt": PHONE},
            "State": "COMPOSING",
            "Media": "AUDIO",
        },
    )
    await inject(
        driver,
        device,
        "ChatPresenceEv",
        fields={"MessageSource": {"Chat": PHONE, "Sender": PHONE}, "State": "PAUSED"},
    )
    await inject(driver, device, "PresenceEv", fields={"From": PHONE})
    await inject(
        driver, device, "PresenceEv", fields={"From": PHONE, "Unavailable": True, "LastSeen": 5}
    )

    await eventually(lambda: len(of(events, device, WaPresence)) == 5, timeout=10)
    presences = of(events, device, WaPresence)
    assert [p.state for p in presences] == [
        "composing",
        "composing",
        "paused",
        "available",
        "unavailable",
    ]
    assert {p.chat_jid for p in presences} == {"5215512345678@s.whatsapp.net"}
    assert presences[1].chat_lid == "123456789012345@lid"


def history_blob(now: datetime) -> dict[str, Any]:
    """A RECENT HistorySync as a phone sends it after linking (JSON of its proto)."""

    def msg(chat: str, msg_id: str, age: timedelta, from_me: bool = False, **extra: Any) -> Any:
        return {
            "message": {
                "key": {"remoteJID": chat, "fromMe": from_me, "ID": msg_id, **extra.pop("key", {})},
                "messageTimestamp": str(int((now - age).timestamp())),
                **extra,
            }
        }

    pn = "5215511111111@s.whatsapp.net"
    lid = "555555555555555@lid"
    group = "120363000000000001@g.us"
    return {
        "syncType": "RECENT",
        "progress": 80,
        "phoneNumberToLidMappings": [{"pnJID": "5215522222222@s.whatsapp.net", "lidJID": lid}],
        "conversations": [
            {
                "ID": pn,
                "messages": [
                    msg(
                        pn,
                        "H1",
                        timedelta(days=2),
                        message={"conversation": "hola"},
                        pushName="Lucía",
                    ),
                    msg(
                        pn,
                        "H2",
                        timedelta(days=1),
                        True,
                        message={
                            "extendedTextMessage": {
                                "text": "claro",
                                "contextInfo": {
                                    "stanzaID": "H1",
                                    "participant": pn,
                                    "quotedMessage": {"conversation": "hola"},
                                },
                            }
                        },
                    ),
                    # older than the window: left out
                    msg(pn, "OLD", timedelta(days=45), message={"conversation": "viejo"}),
                    # a message deleted for everyone (a stub): left out
                    msg(pn, "GONE", timedelta(hours=5), messageStubType="REVOKE"),
                    # a reaction already applied by the phone: not a message
                    msg(
                        pn,
                        "RX",
                        timedelta(hours=4),
                        message={"reactionMessage": {"key": {"ID": "H1"}, "text": "👍"}},
                    ),
                ],
            },
            {
                "ID": lid,
                "messages": [msg(lid, "L1", timedelta(hours=3), message={"conversation": "lid"})],
            },
            {
                "ID": group,
                "name": "Ventas",
                "messages": [
                    msg(
                        group,
                        "G1",
                        timedelta(hours=2),
                        key={"participant": pn},
                        message={"conversation": "buen día"},
                    ),
                ],
            },
            {
                "ID": "status@broadcast",
                "messages": [
                    msg(
                        "status@broadcast",
                        "S1",
                        timedelta(hours=1),
                        message={"conversation": "mi estado"},
                    ),
                ],
            },
            {
                "ID": "5215533333333@s.whatsapp.net",
                "messages": [
                    msg(
                        "5215533333333@s.whatsapp.net",
                        "OLD2",
                        timedelta(days=40),
                        message={"conversation": "antiguo"},
                    ),
                ],
            },
        ],
    }


async def test_history_arrives_in_batches_within_the_window_then_one_last_batch(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}",
        settle_timeout=0.3,
        call_timeout=3.0,
        history_batch=2,
        history_quiet=1.0,
        history_days=30,
    )
    events = Recorder()
    device = await linked_device(driver, test_servers.database_url, events)
    now = datetime.now(UTC)
    # a pairing asks the phone for no more history than that
    session = held(driver, device)
    props = await driver.pool.request(
        session.child, "debug_device_props", sid=session.sid, timeout=10
    )
    assert props["historySyncConfig"] == {"fullSyncDaysLimit": 30}
    assert props["os"] == "Clarin"

    # the push names come in a blob of their own, before the messages
    await inject(
        driver,
        device,
        "HistorySyncEv",
        fields={
            "Data": {
                "syncType": "PUSH_NAME",
                "pushnames": [{"ID": "5215522222222@s.whatsapp.net", "pushname": "Pedro"}],
            }
        },
    )
    await inject(driver, device, "HistorySyncEv", fields={"Data": history_blob(now)})

    await eventually(lambda: any(h.last for h in of(events, device, WaHistory)), timeout=15)
    batches = of(events, device, WaHistory)
    assert [h.batch for h in batches] == list(range(len(batches)))
    assert len({h.sync_id for h in batches}) == 1
    assert [h.last for h in batches] == [False] * (len(batches) - 1) + [True]
    assert all(len(h.messages) <= 2 for h in batches)
    assert batches[-1].messages == [] and batches[0].progress == 80
    messages = {m.wa_message_id: m for h in batches for m in h.messages}
    assert set(messages) == {"H1", "H2", "L1", "G1"}
    first = messages["H1"]
    assert first.direction == "in" and first.push_name == "Lucía"
    assert first.sent_at == datetime.fromtimestamp(int((now - timedelta(days=2)).timestamp()), UTC)
    ours = messages["H2"]
    assert ours.direction == "out" and ours.sender_jid is None
    assert ours.reply_to is not None and ours.reply_to.wa_message_id == "H1"
    lid = messages["L1"]
    assert lid.chat_jid == "5215522222222@s.whatsapp.net" and lid.chat_lid == "555555555555555@lid"
    assert lid.push_name == "Pedro"
    group = messages["G1"]
    assert group.is_group and group.sender_jid == "5215511111111@s.whatsapp.net"
    chats = {c.chat_jid: c for h in batches for c in h.chats}
    assert set(chats) == {
        "5215511111111@s.whatsapp.net",
        "5215522222222@s.whatsapp.net",
        "120363000000000001@g.us",
    }
    assert (
        chats["120363000000000001@g.us"].name == "Ventas"
        and chats["120363000000000001@g.us"].is_group
    )
    assert chats["5215522222222@s.whatsapp.net"].name == "Pedro"
    # no live message came of it
    assert events.messages[device] == []


async def test_a_big_history_import_does_not_hold_back_other_devices(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}",
        settle_timeout=0.3,
        call_timeout=5.0,
        history_quiet=1.0,
    )
    events = Recorder()
    importing, other = await linked_devices(driver, test_servers.database_url, events, 2)
    assert driver.session_pid(importing) == driver.session_pid(other)  # one child
    arrived: dict[str, int] = {}  # the history batches seen when the live message came

    original = events.on_message

    async def on_message(device_id: str, message: Any, media: Any) -> None:
        arrived[message.wa_message_id] = len(of(events, importing, WaHistory))
        await original(device_id, message, media)

    events.on_message = on_message  # type: ignore[method-assign]

    session = held(driver, importing)
    await driver.pool.request(
        session.child,
        "debug_history",
        sid=session.sid,
        chats=40,
        per_chat=500,
        prefix="BIG",
        timeout=30,
    )
    await inject(
        driver,
        other,
        "MessageEv",
        fields=message_ev("LIVE", {"Chat": PHONE, "Sender": PHONE}, {"conversation": "¿hola?"}),
    )

    await eventually(lambda: any(h.last for h in of(events, importing, WaHistory)), timeout=60)
    batches = of(events, importing, WaHistory)
    total = sum(len(h.messages) for h in batches)
    assert total == 40 * 500
    assert "LIVE" in arrived and arrived["LIVE"] < len(batches) - 1  # before the import ended
    assert [m.wa_message_id for m, _ in events.messages[other]] == ["LIVE"]
    assert events.messages[importing] == []


async def test_replies_reactions_edits_deletes_and_typing_go_out_through_neonize(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=3.0
    )
    events = Recorder()
    device = await linked_device(driver, test_servers.database_url, events)
    session = held(driver, device)
    await driver.pool.request(session.child, "debug_capture", sid=session.sid, timeout=10)
    await inject(driver, device, "ConnectedEv", fields={"status": True})
    await eventually(lambda: held(driver, device).state == "connected", timeout=10)
    contact = "5215512345678@s.whatsapp.net"

    reply = await driver.send_text(
        device,
        contact,
        "a las 10",
        MessageRef(wa_message_id="THEIRS1", sender_jid=contact, body="¿a qué hora?"),
    )
    react = await driver.react(
        device, contact, MessageRef(wa_message_id="THEIRS1", sender_jid=contact), "🙏"
    )
    unreact = await driver.react(
        device, contact, MessageRef(wa_message_id="OURS1", from_me=True), ""
    )
    edit = await driver.edit(device, contact, "OURS1", "a las 11")
    revoke = await driver.revoke(device, contact, "OURS2")
    await driver.send_typing(device, contact, "composing")
    await driver.send_typing(device, contact, "paused")

    assert [r.wa_message_id for r in (reply, react, unreact, edit, revoke)] == [
        f"3EB0SENT{i}" for i in range(1, 6)
    ]
    assert reply.sent_at == datetime(2023, 11, 14, 22, 15, tzinfo=UTC)
    sent = (
        await driver.pool.request(session.child, "debug_captured", sid=session.sid, timeout=10)
    )["sent"]
    # marked online once connected (WhatsApp sends typing only to online clients)
    assert sent[0] == {"op": "send_presence", "presence": "AVAILABLE"}
    out = [s for s in sent if s["op"] == "send_message"]
    assert {s["to"] for s in out} == {contact}
    quote = out[0]["message"]["extendedTextMessage"]
    assert quote["text"] == "a las 10"
    assert quote["contextInfo"]["stanzaID"] == "THEIRS1"
    assert quote["contextInfo"]["participant"] == contact
    assert quote["contextInfo"]["quotedMessage"] == {"conversation": "¿a qué hora?"}
    reaction = out[1]["message"]["reactionMessage"]
    assert reaction["key"]["ID"] == "THEIRS1" and not reaction["key"].get("fromMe")
    assert reaction["text"] == "🙏"
    removal = out[2]["message"]["reactionMessage"]
    assert removal["key"]["ID"] == "OURS1" and removal["key"]["fromMe"] is True
    assert removal.get("text", "") == ""
    edited = out[3]["message"]["editedMessage"]["message"]["protocolMessage"]
    assert edited["type"] == "MESSAGE_EDIT" and edited["key"]["ID"] == "OURS1"
    assert edited["key"]["fromMe"] is True and edited["editedMessage"] == {
        "conversation": "a las 11"
    }
    revoked = out[4]["message"]["protocolMessage"]
    assert revoked.get("type", "REVOKE") == "REVOKE" and revoked["key"]["ID"] == "OURS2"
    assert revoked["key"]["fromMe"] is True
    assert revoked["key"]["remoteJID"] == contact
    typing = [s for s in sent if s["op"] == "send_chat_presence"]
    assert [(t["to"], t["state"], t["media"]) for t in typing] == [
        (contact, "CHAT_PRESENCE_COMPOSING", "CHAT_PRESENCE_MEDIA_TEXT"),
        (contact, "CHAT_PRESENCE_PAUSED", "CHAT_PRESENCE_MEDIA_TEXT"),
    ]
    # the chat is open: the contact's online/away is asked for, once
    assert [s for s in sent if s["op"] == "subscribe_presence"] == [
        {"op": "subscribe_presence", "to": contact}
    ]


async def test_a_refused_reaction_or_edit_is_reported_like_a_failed_send(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}", settle_timeout=0.3, call_timeout=3.0
    )
    events = Recorder()
    device = await linked_device(driver, test_servers.database_url, events)
    session = held(driver, device)
    await driver.pool.request(
        session.child, "debug_capture", sid=session.sid, fail="message too old to edit", timeout=10
    )
    await inject(driver, device, "ConnectedEv", fields={"status": True})
    await eventually(lambda: held(driver, device).state == "connected", timeout=10)

    with pytest.raises(DriverError) as raised:
        await driver.edit(device, "5215512345678@s.whatsapp.net", "OURS1", "tarde")
    assert "message too old to edit" in str(raised.value)
    with pytest.raises(DriverError):
        await driver.react(
            device, "5215512345678@s.whatsapp.net", MessageRef(wa_message_id="X"), "👍"
        )
    with pytest.raises(DriverError) as bad:
        # a state the contract does not have, as a caller that skipped validation sends it
        await driver.send_typing(
            device, "5215512345678@s.whatsapp.net", cast(TypingState, "recording")
        )
    assert bad.value.code == "bad_request"
    # the child is fine: no restart, still answering
    assert driver.child_restarts == 0
    await driver.send_typing(device, "5215512345678@s.whatsapp.net", "composing")
    sent = (
        await driver.pool.request(session.child, "debug_captured", sid=session.sid, timeout=10)
    )["sent"]
    assert [s["op"] for s in sent] == [
        "send_presence",
        "send_message",
        "send_message",
        "send_chat_presence",
        "subscribe_presence",
    ]


# ---- through the worker: what reaches NATS -----------------------------------------------


async def test_each_kind_reaches_nats_as_the_contract_says(
    test_servers: TestServers, api: Api, events: EventLog, db: asyncpg.Pool
) -> None:
    from .test_neonize_worker import established, linked, neonize_worker

    hole = BlackHole()
    try:
        async with neonize_worker(test_servers, hole.port, history_quiet=0.5) as (_w, driver):
            device, _jid = await linked(api, db, test_servers)
            assert (await api.post(device, "connect")).status_code == 202
            await events.wait(lambda: established(driver, device), timeout=30)
            source = {"Chat": PHONE, "Sender": PHONE}
            contact = "5215512345678@s.whatsapp.net"
            await inject(
                driver,
                device,
                "MessageEv",
                fields=message_ev(
                    "R1",
                    source,
                    {
                        "extendedTextMessage": {
                            "text": "ok",
                            "contextInfo": {
                                "stanzaID": "Q1",
                                "participant": contact,
                                "quotedMessage": {"conversation": "¿viene?"},
                            },
                        }
                    },
                ),
            )
            await inject(
                driver,
                device,
                "MessageEv",
                fields=message_ev(
                    "X1", source, {"reactionMessage": {"key": {"ID": "Q1"}, "text": "😂"}}
                ),
            )
            await inject(
                driver,
                device,
                "MessageEv",
                fields=message_ev(
                    "E1",
                    source,
                    {
                        "protocolMessage": {
                            "type": "MESSAGE_EDIT",
                            "key": {"ID": "Q1"},
                            "editedMessage": {"conversation": "¿viene hoy?"},
                        }
                    },
                ),
            )
            await inject(
                driver,
                device,
                "MessageEv",
                fields=message_ev(
                    "D1", source, {"protocolMessage": {"type": "REVOKE", "key": {"ID": "Q1"}}}
                ),
            )
            await inject(
                driver,
                device,
                "ChatPresenceEv",
                fields={"MessageSource": source, "State": "COMPOSING"},
            )
            await inject(
                driver,
                device,
                "HistorySyncEv",
                fields={"Data": history_blob(datetime.now(UTC))},
            )

            def published(kind: str) -> list[dict[str, Any]]:
                return [s.data["data"] for s in events.of(f".{kind}", device)]

            await events.wait(lambda: any(h["last"] for h in published("history")), timeout=20)
            [reply] = published("message")
            assert reply["wa_message_id"] == "R1"
            assert reply["reply_to"]["wa_message_id"] == "Q1"
            assert reply["reply_to"]["body"] == "¿viene?"
            [reaction] = published("reaction")
            assert (reaction["wa_message_id"], reaction["emoji"]) == ("Q1", "😂")
            assert reaction["reaction_id"] == "X1" and reaction["from_me"] is False
            [edit] = published("edit")
            assert (edit["wa_message_id"], edit["body"], edit["edit_id"]) == (
                "Q1",
                "¿viene hoy?",
                "E1",
            )
            [revoke] = published("revoke")
            assert (revoke["wa_message_id"], revoke["revoke_id"]) == ("Q1", "D1")
            [presence] = published("presence")
            assert presence["chat_jid"] == contact and presence["state"] == "composing"
            history = published("history")
            assert {m["wa_message_id"] for h in history for m in h["messages"]} == {
                "H1",
                "H2",
                "L1",
                "G1",
            }
            assert [h["last"] for h in history].count(True) == 1 and history[-1]["last"]
            assert all(s.subject.startswith("wa.evt.") for s in events.of(".history", device))
    finally:
        hole.close()


async def test_long_history_messages_make_smaller_batches_not_a_killed_child(
    make_driver: MakeDriver, black_hole: BlackHole, test_servers: TestServers
) -> None:
    driver = await make_driver(
        proxy=f"http://127.0.0.1:{black_hole.port}",
        settle_timeout=0.3,
        call_timeout=5.0,
        history_quiet=0.5,
    )
    events = Recorder()
    device = await linked_device(driver, test_servers.database_url, events)
    chat = "5215544444444@s.whatsapp.net"
    now = int(datetime.now(UTC).timestamp())
    long_text = "🙂" * 100_000  # 1.2 MB as JSON (json.dumps writes each as two \\uXXXX)
    blob = {
        "syncType": "RECENT",
        "conversations": [
            {
                "ID": chat,
                "messages": [
                    {
                        "message": {
                            "key": {"remoteJID": chat, "ID": f"LONG{i}"},
                            "messageTimestamp": str(now - 60 * (4 - i)),
                            "message": {"conversation": long_text},
                        }
                    }
                    for i in range(4)
                ],
            }
        ],
    }

    await inject(driver, device, "HistorySyncEv", fields={"Data": blob})

    await eventually(lambda: any(h.last for h in of(events, device, WaHistory)), timeout=30)
    batches = [h for h in of(events, device, WaHistory) if h.messages]
    assert [[m.wa_message_id for m in h.messages] for h in batches] == [
        ["LONG0"],
        ["LONG1"],
        ["LONG2"],
        ["LONG3"],
    ]
    assert all(m.body == long_text for h in batches for m in h.messages)
    assert driver.child_restarts == 0 and events.terminal(device) == []
