"""Issue 12 in the messaging service: quoted replies, reactions, edits, deletes
for everyone and presence from the worker's events; the same from the API; the
history import after linking."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clarin_common.events import (
    MessageRef,
    WaEdit,
    WaHistory,
    WaHistoryChat,
    WaMessage,
    WaPresence,
    WaReaction,
    WaRevoke,
)
from clarin_common.ids import chat_id_for
from clarin_devkit.testing import eventually
from services.messaging.tests import helpers as h
from services.messaging.tests.helpers import AppEvents, Service, Tenant

PHONE = "5215512345678"
JID = f"{PHONE}@s.whatsapp.net"


async def message_by_wa(svc: Service, tenant: Tenant, wa_id: str) -> dict[str, Any]:
    chat_id = chat_id_for(tenant.device_id, JID)
    found = [m for m in await h.messages_of(svc, tenant, chat_id) if m["wa_message_id"] == wa_id]
    assert found, wa_id
    return found[0]


def now() -> datetime:
    return datetime.now(UTC)


def updated(events: AppEvents, wa_id: str) -> list[dict[str, Any]]:
    return [
        e["data"]["message"]
        for e in events.of("message_updated")
        if e["data"]["message"]["wa_message_id"] == wa_id
    ]


async def test_contact_reply_reaction_edit_revoke_change_the_stored_message(svc: Service) -> None:
    tenant = h.new_tenant()
    chat_id = chat_id_for(tenant.device_id, JID)
    async with h.app_events(svc.nc, tenant.account_id) as events:
        await h.publish_wa(svc.nc, tenant, "message", h.inbound("Q1", body="¿Precio?"))
        reply = h.inbound("R1", body="del plan anual").model_copy(
            update={"reply_to": MessageRef(wa_message_id="Q1", sender_jid=JID, body="¿Precio?")}
        )
        await h.publish_wa(svc.nc, tenant, "message", reply)
        # a quote of a message we never stored keeps its preview
        orphan = h.inbound("R2", body="eso").model_copy(
            update={"reply_to": MessageRef(wa_message_id="GONE", body="un mensaje viejo")}
        )
        await h.publish_wa(svc.nc, tenant, "message", orphan)
        await eventually(lambda: len(events.of("new_message")) == 3)
        announced = events.of("new_message")[1]["data"]["message"]
        q1 = await message_by_wa(svc, tenant, "Q1")
        assert announced["reply_to"] == q1["id"]
        assert announced["quoted"]["body"] == "¿Precio?"
        r2 = await message_by_wa(svc, tenant, "R2")
        assert r2["reply_to"] is None and r2["quoted"]["body"] == "un mensaje viejo"

        def reaction(emoji: str, at: datetime) -> WaReaction:
            return WaReaction(
                wa_message_id="Q1", chat_jid=JID, sender_jid=JID, emoji=emoji, reacted_at=at
            )

        t0 = now()
        await h.publish_wa(svc.nc, tenant, "reaction", reaction("👍", t0))
        await eventually(lambda: updated(events, "Q1"))
        assert updated(events, "Q1")[-1]["reactions"] == [
            {"emoji": "👍", "sender_jid": JID, "from_me": False}
        ]
        # one per sender: replaced; an older one delivered late changes nothing
        await h.publish_wa(svc.nc, tenant, "reaction", reaction("❤️", t0 + timedelta(seconds=1)))
        await h.publish_wa(svc.nc, tenant, "reaction", reaction("😮", t0 - timedelta(seconds=5)))
        await eventually(lambda: len(updated(events, "Q1")) == 2)
        assert [r["emoji"] for r in (await message_by_wa(svc, tenant, "Q1"))["reactions"]] == ["❤️"]
        # a reaction is never a message and never an unread
        chat = (await svc.client.get(f"/api/chats/{chat_id}", headers=tenant.headers)).json()
        assert chat["unread_count"] == 3
        assert len(await h.messages_of(svc, tenant, chat_id)) == 3

        edit = WaEdit(wa_message_id="Q1", chat_jid=JID, sender_jid=JID, body="¿Precio final?",
                      edited_at=now())  # fmt: skip
        await h.publish_wa(svc.nc, tenant, "edit", edit)
        await eventually(lambda: len(updated(events, "Q1")) == 3)
        q1 = await message_by_wa(svc, tenant, "Q1")
        assert q1["body"] == "¿Precio final?" and q1["edited_at"] is not None
        audit = await svc.ctx.pool.fetch(
            "SELECT previous_body FROM message_edits WHERE message_id = $1", uuid.UUID(q1["id"])
        )
        assert [a["previous_body"] for a in audit] == ["¿Precio?"]
        assert "previous_body" not in q1
        # the same edit again (a redelivery) changes nothing more
        await h.publish_wa(svc.nc, tenant, "edit", edit)

        revoke = WaRevoke(wa_message_id="Q1", chat_jid=JID, sender_jid=JID, revoked_at=now())
        await h.publish_wa(svc.nc, tenant, "revoke", revoke)
        await eventually(lambda: any(m["deleted"] for m in updated(events, "Q1")))
        q1 = await message_by_wa(svc, tenant, "Q1")
        assert q1["deleted"] is True and q1["body"] is None and q1["reactions"] == []
        # the reply's quote says the quoted message is gone
        r1 = await message_by_wa(svc, tenant, "R1")
        assert r1["quoted"]["deleted"] is True and r1["quoted"]["body"] is None
        # the contact cannot delete what we sent; nothing changes a deleted message
        late = WaEdit(wa_message_id="Q1", chat_jid=JID, body="otra", edited_at=now())
        await h.publish_wa(svc.nc, tenant, "edit", late)
        await h.publish_wa(svc.nc, tenant, "message", h.inbound("LAST", body="fin"))
        await eventually(lambda: len(events.of("new_message")) == 4)
        assert (await message_by_wa(svc, tenant, "Q1"))["body"] is None
        assert len([e for e in updated(events, "Q1")]) == 4


async def test_revoke_removes_the_file_from_disk_and_api(svc: Service, tmp_path: Path) -> None:
    tenant = h.new_tenant()
    from clarin_common.events import MediaRef
    from clarin_common.nats import ensure_object_store

    objects = await ensure_object_store(svc.nc.jetstream())
    await objects.put("in/rev-1", b"picture-bytes")
    ref = MediaRef(object_key="in/rev-1", mime_type="image/jpeg", size=13)
    async with h.app_events(svc.nc, tenant.account_id) as events:
        await h.publish_wa(
            svc.nc, tenant, "message", h.inbound("PIC", body="foto", media=ref, type_="image")
        )
        await eventually(lambda: events.of("new_message"))
        pic = await message_by_wa(svc, tenant, "PIC")
        key = await svc.ctx.pool.fetchval(
            "SELECT storage_key FROM media WHERE message_id = $1", uuid.UUID(pic["id"])
        )
        assert key and await svc.ctx.store.get(key) == b"picture-bytes"
        revoke = WaRevoke(wa_message_id="PIC", chat_jid=JID, sender_jid=JID, revoked_at=now())
        await h.publish_wa(svc.nc, tenant, "revoke", revoke)
        await eventually(lambda: updated(events, "PIC"))
    pic = await message_by_wa(svc, tenant, "PIC")
    assert pic["deleted"] is True and pic["media"] is None and pic["body"] is None

    async def gone() -> bool:
        return await svc.ctx.store.get(key) is None

    await eventually(gone)
    resp = await svc.client.get(f"/api/media/{pic['id']}", headers=tenant.headers)
    assert resp.status_code == 404
    chats = (await svc.client.get("/api/chats", headers=tenant.headers)).json()["items"]
    assert chats[0]["last_message_preview"] == "🚫 Deleted message"
    # the chat list learns it too
    assert [e["data"]["chat"]["last_message_preview"] for e in events.of("chat_updated")] == [
        "🚫 Deleted message"
    ]


async def test_updates_for_unknown_messages_wait_for_them(svc: Service) -> None:
    tenant = h.new_tenant()
    async with h.app_events(svc.nc, tenant.account_id) as events:
        early = WaReaction(wa_message_id="LATE", chat_jid=JID, sender_jid=JID, emoji="🔥",
                           reacted_at=now())  # fmt: skip
        await h.publish_wa(svc.nc, tenant, "reaction", early)
        edit = WaEdit(wa_message_id="LATE", chat_jid=JID, body="corregido", edited_at=now())
        await h.publish_wa(svc.nc, tenant, "edit", edit)

        async def waiting() -> bool:
            return await h.count_rows(svc, "SELECT count(*) FROM pending_updates") >= 2

        await eventually(waiting)
        # a day-old one is dropped instead of applied
        await svc.ctx.pool.execute(
            "INSERT INTO pending_updates (account_id, device_id, wa_message_id, kind, payload, "
            "occurred_at, received_at) VALUES ($1, $2, 'LATE', 'revoke', $3::jsonb, now(), "
            "now() - interval '25 hours')",
            uuid.UUID(tenant.account_id),
            uuid.UUID(tenant.device_id),
            WaRevoke(wa_message_id="LATE", chat_jid=JID, revoked_at=now()).model_dump_json(),
        )
        sent = now() - timedelta(minutes=1)
        await h.publish_wa(svc.nc, tenant, "message", h.inbound("LATE", body="orig", sent_at=sent))
        await eventually(lambda: events.of("new_message"))
    late = await message_by_wa(svc, tenant, "LATE")
    assert late["body"] == "corregido" and late["deleted"] is False
    assert [r["emoji"] for r in late["reactions"]] == ["🔥"]
    assert await h.count_rows(svc, "SELECT count(*) FROM pending_updates") == 0


async def test_presence_reaches_the_socket_for_known_chats_only(svc: Service) -> None:
    tenant = h.new_tenant()
    async with h.app_events(svc.nc, tenant.account_id) as events:
        typing = WaPresence(chat_jid="5215599990000@s.whatsapp.net", state="composing", at=now())
        await h.publish_wa(svc.nc, tenant, "presence", typing)
        await h.publish_wa(svc.nc, tenant, "message", h.inbound("P1"))
        await eventually(lambda: events.of("new_message"))
        await h.publish_wa(
            svc.nc, tenant, "presence", WaPresence(chat_jid=JID, state="composing", at=now())
        )
        await eventually(lambda: events.of("presence"))
    assert [e["data"] for e in events.of("presence")] == [
        {"chat_id": chat_id_for(tenant.device_id, JID), "state": "composing"}
    ]


# ---- the same from the API ------------------------------------------------------------


async def sent_message(svc: Service, tenant: Tenant, body: str, **extra: Any) -> dict[str, Any]:
    resp = await svc.client.post(
        "/api/messages/send",
        json={"device_id": tenant.device_id, "to": PHONE, "body": body, **extra},
        headers=tenant.headers,
    )
    assert resp.status_code == 202, resp.text
    message: dict[str, Any] = resp.json()

    async def on_whatsapp() -> bool:
        # queued: the worker takes it and reports its WhatsApp id (a `sent` event)
        sql = "SELECT wa_message_id FROM messages WHERE id = $1"
        message["wa_message_id"] = await svc.ctx.pool.fetchval(sql, uuid.UUID(message["id"]))
        return message["wa_message_id"] is not None

    await eventually(on_whatsapp)
    return message


async def test_api_reply_react_edit_revoke_typing(svc: Service) -> None:
    tenant = h.new_tenant()
    chat_id = chat_id_for(tenant.device_id, JID)
    await h.publish_wa(svc.nc, tenant, "message", h.inbound("IN1", body="¿Abren hoy?"))

    async def stored() -> bool:
        return (
            await h.count_rows(svc, "SELECT count(*) FROM messages WHERE wa_message_id = 'IN1'")
            == 1
        )

    await eventually(stored)
    incoming = await message_by_wa(svc, tenant, "IN1")
    async with (
        h.fake_worker(svc.nc, tenant.device_id) as worker,
        h.app_events(svc.nc, tenant.account_id) as events,
    ):
        reply = await sent_message(svc, tenant, "Sí, hasta las 8", reply_to=incoming["id"])
        assert reply["reply_to"] == incoming["id"] and reply["quoted"]["body"] == "¿Abren hoy?"
        assert worker.commands[0]["reply_to"] == {
            "wa_message_id": "IN1", "from_me": False, "sender_jid": JID,
            "body": "¿Abren hoy?", "type": "text",
        }  # fmt: skip

        resp = await svc.client.post(
            f"/api/messages/{incoming['id']}/react", json={"emoji": "🙏"}, headers=tenant.headers
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["reactions"] == [{"emoji": "🙏", "sender_jid": None, "from_me": True}]
        react = worker.commands[-1]
        assert react["type"] == "react" and react["emoji"] == "🙏"
        assert react["target"]["wa_message_id"] == "IN1" and react["chat_jid"] == JID
        await eventually(lambda: updated(events, "IN1"))

        resp = await svc.client.patch(
            f"/api/messages/{reply['id']}", json={"body": "Sí, hasta las 9"},
            headers=tenant.headers,
        )  # fmt: skip
        assert resp.status_code == 200, resp.text
        assert resp.json()["body"] == "Sí, hasta las 9" and resp.json()["edited_at"]
        assert worker.commands[-1]["type"] == "edit"

        resp = await svc.client.post(
            f"/api/chats/{chat_id}/typing", json={"state": "composing"}, headers=tenant.headers
        )
        assert resp.status_code == 204
        assert worker.commands[-1] == {"type": "typing", "chat_jid": JID, "state": "composing"}

        resp = await svc.client.post(f"/api/messages/{reply['id']}/revoke", headers=tenant.headers)
        assert resp.status_code == 202, resp.text
        assert resp.json()["deleted"] is True and resp.json()["body"] is None
        assert worker.commands[-1]["type"] == "revoke"

        # the worker's confirming events, later, change nothing more
        updates_before = len(events.of("message_updated"))
        confirm = WaRevoke(
            wa_message_id=reply["wa_message_id"], chat_jid=JID, from_me=True,
            revoked_at=datetime.fromisoformat(resp.json()["sent_at"]) + timedelta(minutes=1),
        )  # fmt: skip
        await h.publish_wa(svc.nc, tenant, "revoke", confirm)
        await h.publish_wa(svc.nc, tenant, "message", h.inbound("IN2", body="gracias"))
        await eventually(lambda: len(events.of("new_message")) >= 2)
        assert len(events.of("message_updated")) == updates_before

        # bad input
        for method, path, body, status, code in [
            ("post", f"/api/messages/{reply['id']}/react", {"emoji": "👍"}, 409, "message_deleted"),
            ("patch", f"/api/messages/{reply['id']}", {"body": "x"}, 409, "message_deleted"),
            ("patch", f"/api/messages/{incoming['id']}", {"body": "x"}, 409,
             "message_not_editable"),
            ("post", f"/api/messages/{incoming['id']}/revoke", None, 409,
             "message_not_revocable"),
            ("post", f"/api/messages/{uuid.uuid4()}/react", {"emoji": "👍"}, 404,
             "message_not_found"),
        ]:  # fmt: skip
            resp = await svc.client.request(method, path, json=body, headers=tenant.headers)
            assert (resp.status_code, resp.json()["error"]["code"]) == (status, code), path

        # the edit window
        old = await sent_message(svc, tenant, "ayer")
        await svc.ctx.pool.execute(
            "UPDATE messages SET sent_at = now() - interval '16 minutes' WHERE id = $1",
            uuid.UUID(old["id"]),
        )
        resp = await svc.client.patch(
            f"/api/messages/{old['id']}", json={"body": "hoy"}, headers=tenant.headers
        )
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "edit_window_passed"

        # reply_to from another chat (422) or another account (404)
        await h.publish_wa(
            svc.nc, tenant, "message", h.inbound("OTHER", phone="5215500001111", body="hola")
        )
        other_chat = chat_id_for(tenant.device_id, "5215500001111@s.whatsapp.net")

        async def other_stored() -> bool:
            return (
                await h.count_rows(
                    svc, "SELECT count(*) FROM messages WHERE wa_message_id = 'OTHER'"
                )
                == 1
            )

        await eventually(other_stored)
        elsewhere = (await h.messages_of(svc, tenant, other_chat))[0]
        resp = await svc.client.post(
            "/api/messages/send",
            json={"chat_id": chat_id, "body": "x", "reply_to": elsewhere["id"]},
            headers=tenant.headers,
        )
        assert resp.status_code == 422 and resp.json()["error"]["details"][0]["loc"] == [
            "body", "reply_to"
        ]  # fmt: skip
        stranger = h.new_tenant()
        resp = await svc.client.post(
            "/api/messages/send",
            json={"device_id": stranger.device_id, "to": PHONE, "body": "x",
                  "reply_to": incoming["id"]},
            headers=stranger.headers,
        )  # fmt: skip
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "message_not_found"
        resp = await svc.client.post(
            f"/api/messages/{incoming['id']}/react", json={"emoji": "👍"},
            headers=stranger.headers,
        )  # fmt: skip
        assert resp.status_code == 404

    # no worker holds the device
    resp = await svc.client.post(
        f"/api/chats/{chat_id}/typing", json={"state": "paused"}, headers=tenant.headers
    )
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "device_not_connected"


# ---- history -----------------------------------------------------------------------------


def history_part(
    tenant: Tenant, sync_id: str, chats: int, per_chat: int, *, last: bool, start: int = 0
) -> WaHistory:
    base = now() - timedelta(days=2)
    messages = []
    for c in range(chats):
        jid = f"52155100{c:05d}@s.whatsapp.net"
        for i in range(per_chat):
            messages.append(
                WaMessage(
                    wa_message_id=f"H-{c}-{start + i}",
                    chat_jid=jid,
                    sender_jid=jid,
                    push_name=f"Cliente {c}",
                    direction="in" if i % 2 else "out",
                    body=f"mensaje {start + i}",
                    sent_at=base + timedelta(minutes=start + i),
                )
            )
    return WaHistory(
        sync_id=sync_id,
        last=last,
        chats=[WaHistoryChat(chat_jid=f"52155100{c:05d}@s.whatsapp.net", name=f"Agenda {c}")
               for c in range(chats)],
        messages=messages,
    )  # fmt: skip


async def test_history_import_lands_once_read_without_new_message(svc: Service) -> None:
    tenant = h.new_tenant()
    async with h.app_events(svc.nc, tenant.account_id) as events:
        first = history_part(tenant, "S1", 5, 100, last=False)
        second = history_part(tenant, "S1", 5, 100, last=True, start=100)
        # one message far older than the window is skipped
        ancient = WaMessage(wa_message_id="H-OLD", chat_jid=JID, direction="in", body="2019",
                            sent_at=now() - timedelta(days=400))  # fmt: skip
        first.messages.append(ancient)
        await h.publish_wa(svc.nc, tenant, "history", first)
        await h.publish_wa(svc.nc, tenant, "history", second)
        # a redelivery of both parts, past the duplicate window
        await h.publish_wa(svc.nc, tenant, "history", first)
        await h.publish_wa(svc.nc, tenant, "history", second)
        await eventually(lambda: events.of("history_synced"))
        await h.publish_wa(svc.nc, tenant, "message", h.inbound("LIVE", phone="5215599990001"))
        await eventually(lambda: events.of("new_message"))
    assert [e["data"] for e in events.of("history_synced")] == [
        {"device_id": tenant.device_id, "chats": 5, "messages": 1000}
    ]
    assert len(events.of("history_importing")) == 1
    assert [e["data"]["message"]["wa_message_id"] for e in events.of("new_message")] == ["LIVE"]
    count = await h.count_rows(
        svc, "SELECT count(*) FROM messages WHERE device_id = $1", uuid.UUID(tenant.device_id)
    )
    assert count == 1001
    chats = (await svc.client.get("/api/chats", headers=tenant.headers)).json()["items"]
    imported = [c for c in chats if c["phone"] != "5215599990001"]
    assert len(imported) == 5
    assert all(c["unread_count"] == 0 for c in imported)
    assert {c["name"] for c in imported} == {f"Cliente {c}" for c in range(5)}
    assert all(c["last_message_preview"] == "mensaje 199" for c in imported)
    page = await h.messages_of(svc, tenant, imported[0]["id"])
    assert {m["status"] for m in page if m["direction"] == "in"} == {"read"}
    # newest first, in their own times
    assert [page[0]["body"], page[-1]["body"]] == ["mensaje 199", "mensaje 0"]
    assert page[0]["sent_at"] > page[-1]["sent_at"]


async def test_a_photo_can_answer_a_message_too(svc: Service) -> None:
    tenant = h.new_tenant()
    await h.publish_wa(svc.nc, tenant, "message", h.inbound("ASK", body="¿Foto del producto?"))

    async def stored() -> bool:
        return (
            await h.count_rows(svc, "SELECT count(*) FROM messages WHERE wa_message_id = 'ASK'")
            == 1
        )

    await eventually(stored)
    asked = await message_by_wa(svc, tenant, "ASK")
    async with h.fake_worker(svc.nc, tenant.device_id) as worker:
        resp = await svc.client.post(
            "/api/messages/send/media",
            data={"chat_id": asked["chat_id"], "caption": "Aquí está", "reply_to": asked["id"]},
            files={"file": ("foto.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 16, "image/png")},
            headers=tenant.headers,
        )
    assert resp.status_code == 202, resp.text
    assert resp.json()["reply_to"] == asked["id"]
    assert resp.json()["quoted"]["body"] == "¿Foto del producto?"
    command = worker.commands[-1]
    assert command["type"] == "send_media"
    assert command["reply_to"]["wa_message_id"] == "ASK" and command["reply_to"]["from_me"] is False
