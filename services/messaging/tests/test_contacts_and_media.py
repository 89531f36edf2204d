"""One person, one chat (phone number and LID), status posts, and media that
arrives after its message (pending → ready / failed → retry)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js.object_store import ObjectStore

from clarin_common.contract import Lead
from clarin_common.events import (
    LeadData,
    MediaInfo,
    MediaRef,
    WaMedia,
    WaMessage,
    app_envelope,
    app_event_subject,
)
from clarin_common.ids import chat_id_for
from clarin_common.nats import ensure_object_store, publish_event
from clarin_devkit.testing import eventually
from services.messaging.tests import helpers as h
from services.messaging.tests.helpers import Service, Tenant

PHONE = "5215544443333"
PHONE_JID = f"{PHONE}@s.whatsapp.net"
LID_JID = "99887766554433@lid"


def from_contact(
    wa_id: str,
    *,
    chat_jid: str,
    chat_lid: str | None,
    body: str | None = "hola",
    media_info: MediaInfo | None = None,
    type_: str = "text",
) -> WaMessage:
    return WaMessage(
        wa_message_id=wa_id,
        chat_jid=chat_jid,
        chat_lid=chat_lid,
        sender_jid=chat_jid,
        sender_lid=chat_lid,
        push_name="Lucía",
        direction="in",
        type=type_,
        body=body,
        media_info=media_info,
        sent_at=datetime.now(UTC),
    )


async def message_count(svc: Service, tenant: Tenant) -> int:
    value = await svc.ctx.pool.fetchval(
        "SELECT count(*) FROM messages WHERE account_id = $1", uuid.UUID(tenant.account_id)
    )
    return int(value)


async def has_messages(svc: Service, tenant: Tenant, n: int) -> bool:
    return await message_count(svc, tenant) >= n


# ---- one person, one chat --------------------------------------------------------------


async def test_a_chat_opened_by_lid_merges_into_the_phone_chat_when_learnt(svc: Service) -> None:
    tenant = h.new_tenant()
    lid_chat = chat_id_for(tenant.device_id, LID_JID)
    phone_chat = chat_id_for(tenant.device_id, PHONE_JID)

    await h.publish_wa(
        svc.nc, tenant, "message", from_contact("LID1", chat_jid=LID_JID, chat_lid=LID_JID)
    )
    await eventually(lambda: has_messages(svc, tenant, 1))
    [opened] = await h.chats_of(svc, tenant)
    assert opened["id"] == lid_chat
    assert opened["jid"] == LID_JID and opened["lid"] == LID_JID
    assert opened["phone"] is None and opened["unread_count"] == 1

    async with h.app_events(svc.nc, tenant.account_id) as events:
        # WhatsApp tells the phone alongside the LID: the same person
        await h.publish_wa(
            svc.nc,
            tenant,
            "message",
            from_contact("LID2", chat_jid=PHONE_JID, chat_lid=LID_JID, body="¿sigues ahí?"),
        )
        await eventually(lambda: events.of("new_message"))
    [merged] = await h.chats_of(svc, tenant)
    assert merged["id"] == phone_chat
    assert merged["jid"] == PHONE_JID and merged["phone"] == PHONE and merged["lid"] == LID_JID
    assert merged["unread_count"] == 2 and merged["name"] == "Lucía"
    assert merged["last_message_preview"] == "¿sigues ahí?"
    assert [m["wa_message_id"] for m in await h.messages_of(svc, tenant, phone_chat)] == [
        "LID2",
        "LID1",
    ]
    gone = await svc.client.get(f"/api/chats/{lid_chat}", headers=tenant.headers)
    assert gone.status_code == 404
    assert events.of("new_message")[0]["data"]["chat"]["id"] == phone_chat

    # later messages by LID alone land in the same chat
    await h.publish_wa(
        svc.nc, tenant, "message", from_contact("LID3", chat_jid=LID_JID, chat_lid=LID_JID)
    )
    await eventually(lambda: has_messages(svc, tenant, 3))
    [same] = await h.chats_of(svc, tenant)
    assert same["id"] == phone_chat and same["unread_count"] == 3

    # marking it read clears every message, whichever address it came on
    assert (
        await svc.client.post(f"/api/chats/{phone_chat}/read", headers=tenant.headers)
    ).status_code == 204
    statuses = {m["status"] for m in await h.messages_of(svc, tenant, phone_chat)}
    assert statuses == {"read"}


async def test_merge_into_an_existing_phone_chat_keeps_its_lead_and_sums_unread(
    svc: Service,
) -> None:
    tenant, other = h.new_tenant(), h.new_tenant()
    phone_chat = chat_id_for(tenant.device_id, PHONE_JID)
    await h.publish_wa(svc.nc, tenant, "message", h.inbound("P1", phone=PHONE))
    await eventually(lambda: has_messages(svc, tenant, 1))
    now = datetime.now(UTC)
    lead_id = str(uuid.uuid4())
    lead = Lead(
        id=lead_id,
        account_id=tenant.account_id,
        name="Lucía",
        phone=PHONE,
        stage="new",
        source="whatsapp",
        chat_id=phone_chat,
        created_at=now,
        updated_at=now,
    )
    await publish_event(
        svc.nc.jetstream(),
        app_event_subject(tenant.account_id, "lead_created"),
        app_envelope(tenant.account_id, "lead_created", LeadData(lead=lead)),
    )

    async def linked() -> bool:
        chats = await h.chats_of(svc, tenant)
        return bool(chats) and chats[0]["lead_id"] == lead_id

    await eventually(linked)

    # the LID writes before the phone is known: a second chat, for now
    await h.publish_wa(
        svc.nc, tenant, "message", from_contact("P2", chat_jid=LID_JID, chat_lid=LID_JID)
    )
    # another account's device with the same LID is another chat altogether
    await h.publish_wa(
        svc.nc, other, "message", from_contact("O1", chat_jid=LID_JID, chat_lid=LID_JID)
    )
    await eventually(lambda: has_messages(svc, tenant, 2))
    assert len(await h.chats_of(svc, tenant)) == 2

    await h.publish_wa(
        svc.nc, tenant, "message", from_contact("P3", chat_jid=PHONE_JID, chat_lid=LID_JID)
    )
    await eventually(lambda: has_messages(svc, tenant, 3))
    [chat] = await h.chats_of(svc, tenant)
    assert chat["id"] == phone_chat and chat["lead_id"] == lead_id
    assert chat["lid"] == LID_JID and chat["unread_count"] == 3
    assert len(await h.messages_of(svc, tenant, phone_chat)) == 3

    await eventually(lambda: has_messages(svc, other, 1))
    [theirs] = await h.chats_of(svc, other)
    assert theirs["id"] == chat_id_for(other.device_id, LID_JID) and theirs["lead_id"] is None
    foreign = await svc.client.get(f"/api/chats/{phone_chat}", headers=other.headers)
    assert foreign.status_code == 404


async def test_lid_only_and_phone_in_one_batch_make_one_chat(svc: Service) -> None:
    tenant = h.new_tenant()
    await svc.ctx.consumers[0].stop()
    await h.publish_wa(
        svc.nc, tenant, "message", from_contact("B1", chat_jid=LID_JID, chat_lid=LID_JID)
    )
    await h.publish_wa(
        svc.nc, tenant, "message", from_contact("B2", chat_jid=PHONE_JID, chat_lid=LID_JID)
    )
    from clarin_messaging.consumers import wa_events_consumer

    consumer = wa_events_consumer(svc.ctx)
    await consumer.start()
    try:
        await eventually(lambda: has_messages(svc, tenant, 2))
        [chat] = await h.chats_of(svc, tenant)
        assert chat["id"] == chat_id_for(tenant.device_id, PHONE_JID)
        assert chat["lid"] == LID_JID and chat["unread_count"] == 2
    finally:
        await consumer.stop()


async def test_a_lid_chat_with_a_resolved_sender_is_the_phone_chat(svc: Service) -> None:
    tenant = h.new_tenant()
    message = from_contact("R1", chat_jid=LID_JID, chat_lid=None).model_copy(
        update={"sender_jid": PHONE_JID}
    )
    await h.publish_wa(svc.nc, tenant, "message", message)
    await eventually(lambda: has_messages(svc, tenant, 1))
    [chat] = await h.chats_of(svc, tenant)
    assert chat["id"] == chat_id_for(tenant.device_id, PHONE_JID)
    assert chat["phone"] == PHONE and chat["lid"] == LID_JID


async def test_status_posts_make_no_chat_and_no_unread(svc: Service) -> None:
    tenant = h.new_tenant()
    post = WaMessage(
        wa_message_id="STATUS1",
        chat_jid="status@broadcast",
        sender_jid=PHONE_JID,
        direction="in",
        body="De vacaciones",
        sent_at=datetime.now(UTC),
    )
    await h.publish_wa(svc.nc, tenant, "message", post)
    await h.publish_wa(svc.nc, tenant, "message", h.inbound("AFTER", phone=PHONE))
    # published after the status post: once it is stored, the post was handled
    await eventually(lambda: has_messages(svc, tenant, 1))
    chats = await h.chats_of(svc, tenant)
    assert [c["jid"] for c in chats] == [PHONE_JID]
    assert chats[0]["unread_count"] == 1
    assert await message_count(svc, tenant) == 1


# ---- media in two phases ---------------------------------------------------------------


def announced(wa_id: str, download: str = "token-1") -> WaMessage:
    return from_contact(
        wa_id,
        chat_jid=PHONE_JID,
        chat_lid=None,
        body="mira",
        type_="image",
        media_info=MediaInfo(
            mime_type="image/png", file_name="foto.png", size=4, download=download
        ),
    )


async def media_of(svc: Service, tenant: Tenant, jid: str = PHONE_JID) -> dict[str, Any] | None:
    """The media of the latest message of the chat with ``jid`` (None before any)."""
    chat_id = chat_id_for(tenant.device_id, jid)
    if not await svc.ctx.pool.fetchval("SELECT 1 FROM chats WHERE id = $1", chat_id):
        return None
    messages = await h.messages_of(svc, tenant, chat_id)
    media: dict[str, Any] | None = messages[0]["media"] if messages else None
    return media


async def media_status(svc: Service, tenant: Tenant, status: str, jid: str = PHONE_JID) -> bool:
    media = await media_of(svc, tenant, jid)
    return media is not None and media["status"] == status


async def test_media_pending_failed_retried_ready(svc: Service) -> None:
    tenant, other = h.new_tenant(), h.new_tenant()
    objects = await ensure_object_store(svc.nc.jetstream())
    async with h.app_events(svc.nc, tenant.account_id) as events:
        await h.publish_wa(svc.nc, tenant, "message", announced("MEDIA1"))
        await eventually(lambda: events.of("new_message"))
        message = events.of("new_message")[0]["data"]["message"]
        assert message["media"]["status"] == "pending" and message["media"]["error"] is None
        assert message["media"]["mime_type"] == "image/png"
        assert events.of("new_message")[0]["data"]["chat"]["unread_count"] == 1
        url = f"/api/media/{message['id']}"
        pending = await svc.client.get(url, headers=tenant.headers)
        assert pending.status_code == 409 and pending.json()["error"]["code"] == "media_pending"

        failed = WaMedia(
            wa_message_id="MEDIA1",
            chat_jid=PHONE_JID,
            status="failed",
            error="WhatsApp's media server did not answer",
            retryable=True,
        )
        await h.publish_wa(svc.nc, tenant, "media", failed)
        await eventually(lambda: events.of("message_updated"))
        updated = events.of("message_updated")[0]["data"]["message"]
        assert updated["id"] == message["id"]
        assert updated["media"]["status"] == "failed"
        assert updated["media"]["error"] == "WhatsApp's media server did not answer"
        got = await svc.client.get(url, headers=tenant.headers)
        assert got.status_code == 409 and got.json()["error"]["code"] == "media_failed"

        retry = f"{url}/retry"
        assert (await svc.client.post(retry)).status_code == 401
        assert (await svc.client.post(retry, headers=other.headers)).status_code == 404
        bad = await svc.client.post("/api/media/nope/retry", headers=tenant.headers)
        assert bad.status_code == 422
        # nobody holds the device: 409, and it stays failed
        offline = await svc.client.post(retry, headers=tenant.headers)
        assert offline.status_code == 409
        assert offline.json()["error"]["code"] == "device_not_connected"
        assert await media_status(svc, tenant, "failed")

        async with h.fake_worker(svc.nc, tenant.device_id) as worker:
            resp = await svc.client.post(retry, headers=tenant.headers)
        assert resp.status_code == 202, resp.text
        assert resp.json()["media"]["status"] == "pending"
        [command] = worker.commands
        assert command == {
            "type": "retry_media",
            "wa_message_id": "MEDIA1",
            "chat_jid": PHONE_JID,
            "mime_type": "image/png",
            "download": "token-1",
        }
        await eventually(lambda: len(events.of("message_updated")) == 2)
        assert events.of("message_updated")[1]["data"]["message"]["media"]["status"] == "pending"
        again = await svc.client.post(retry, headers=tenant.headers)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "media_not_retryable"

        data = b"\x89PNG"
        await objects.put("in/test/media1", data)
        ready = WaMedia(
            wa_message_id="MEDIA1",
            chat_jid=PHONE_JID,
            status="ready",
            media=MediaRef(
                object_key="in/test/media1",
                mime_type="image/png",
                file_name="foto.png",
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            ),
        )
        await h.publish_wa(svc.nc, tenant, "media", ready)
        await eventually(lambda: len(events.of("message_updated")) == 3)
        done = events.of("message_updated")[2]["data"]["message"]["media"]
        assert done["status"] == "ready" and done["size"] == len(data)
    got = await svc.client.get(url, headers=tenant.headers)
    assert got.status_code == 200 and got.content == data
    assert (await svc.client.get(url, headers=other.headers)).status_code == 404
    # ready is final: a late failure changes nothing
    await h.publish_wa(svc.nc, tenant, "media", failed)
    await h.publish_wa(svc.nc, tenant, "message", h.inbound("LATER", phone=PHONE))
    await eventually(lambda: has_messages(svc, tenant, 2))
    assert (await svc.client.get(url, headers=tenant.headers)).status_code == 200
    # the bytes are ours now: the object store copy is gone
    await eventually(lambda: _object_gone(objects, "in/test/media1"))


async def _object_gone(objects: ObjectStore, key: str) -> bool:
    try:
        await objects.get(key)
    except Exception:
        return True
    return False


async def test_too_large_and_a_retry_the_worker_refuses(svc: Service) -> None:
    tenant = h.new_tenant()
    await h.publish_wa(svc.nc, tenant, "message", announced("BIG", download="t-big"))
    await h.publish_wa(
        svc.nc,
        tenant,
        "media",
        WaMedia(
            wa_message_id="BIG",
            chat_jid=PHONE_JID,
            status="too_large",
            error="The file is larger than the 64 MiB limit",
        ),
    )
    await eventually(lambda: media_status(svc, tenant, "too_large"))
    media = await media_of(svc, tenant)
    assert media is not None
    assert media["error"] == "The file is larger than the 64 MiB limit"
    message_id = media["url"].rsplit("/", 1)[-1]
    got = await svc.client.get(media["url"], headers=tenant.headers)
    assert got.status_code == 409 and got.json()["error"]["code"] == "media_too_large"
    refused = await svc.client.post(f"/api/media/{message_id}/retry", headers=tenant.headers)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "media_not_retryable"

    # a failed download the worker can no longer fetch: failed for good
    other_jid = "5215577776666@s.whatsapp.net"
    gone_chat = chat_id_for(tenant.device_id, other_jid)
    await h.publish_wa(
        svc.nc,
        tenant,
        "message",
        announced("GONE").model_copy(update={"chat_jid": other_jid, "sender_jid": other_jid}),
    )
    await h.publish_wa(
        svc.nc,
        tenant,
        "media",
        WaMedia(
            wa_message_id="GONE",
            chat_jid=other_jid,
            status="failed",
            error="timed out",
            retryable=True,
        ),
    )
    await eventually(lambda: media_status(svc, tenant, "failed", other_jid))
    [message] = await h.messages_of(svc, tenant, gone_chat)

    class Refusing:
        async def handle(self, msg: Msg) -> None:
            await msg.respond(
                b'{"ok": false, "error": {"code": "media_gone", '
                b'"message": "The file is no longer available on WhatsApp"}}'
            )

    sub = await svc.nc.subscribe(f"wa.cmd.{tenant.device_id}", cb=Refusing().handle)
    await svc.nc.flush()
    try:
        resp = await svc.client.post(f"/api/media/{message['id']}/retry", headers=tenant.headers)
    finally:
        await sub.unsubscribe()
    assert resp.status_code == 409
    assert resp.json()["error"]["message"] == "The file is no longer available on WhatsApp"
    [after] = await h.messages_of(svc, tenant, gone_chat)
    assert after["media"]["status"] == "failed"
    assert after["media"]["error"] == "The file is no longer available on WhatsApp"
    final = await svc.client.post(f"/api/media/{message['id']}/retry", headers=tenant.headers)
    assert final.status_code == 409 and final.json()["error"]["code"] == "media_not_retryable"


async def test_a_media_event_before_its_message_waits_for_it(svc: Service) -> None:
    from clarin_common.events import WA_EVENTS_STREAM, wa_envelope, wa_event_subject
    from clarin_common.nats import encode

    tenant = h.new_tenant()
    js = svc.nc.jetstream()
    objects = await ensure_object_store(js)
    data = b"early bytes"
    await objects.put("in/test/early", data)
    outcome = WaMedia(
        wa_message_id="EARLY",
        chat_jid=PHONE_JID,
        status="ready",
        media=MediaRef(object_key="in/test/early", mime_type="image/png", size=len(data)),
    )
    env = wa_envelope(tenant.account_id, tenant.device_id, "media", outcome)
    ack = await js.publish(
        wa_event_subject(tenant.account_id, tenant.device_id, "media"),
        encode(env),
        headers={"Nats-Msg-Id": env.id},
    )

    async def handed_back() -> bool:
        # delivered to the handler, and not acked: it waits for its message
        info = await js.consumer_info(WA_EVENTS_STREAM, svc.settings.consumer_durable)
        return bool(info.delivered.stream_seq >= ack.seq and info.num_ack_pending >= 1)

    await eventually(handed_back)
    # the message shows up after its file (its first delivery failed, say)
    await h.publish_wa(svc.nc, tenant, "message", announced("EARLY"))
    await eventually(lambda: media_status(svc, tenant, "ready"), timeout=15)
    media = await media_of(svc, tenant)
    assert media is not None
    got = await svc.client.get(media["url"], headers=tenant.headers)
    assert got.status_code == 200 and got.content == data


async def test_a_stalled_download_can_be_retried(svc: Service) -> None:
    tenant = h.new_tenant()
    await h.publish_wa(svc.nc, tenant, "message", announced("STALL", download="t-stall"))
    await eventually(lambda: media_status(svc, tenant, "pending"))
    media = await media_of(svc, tenant)
    assert media is not None
    retry = media["url"] + "/retry"
    fresh = await svc.client.post(retry, headers=tenant.headers)
    assert fresh.status_code == 409 and fresh.json()["error"]["code"] == "media_not_retryable"

    # its worker stopped mid-download: nothing will ever settle it
    await svc.ctx.pool.execute(
        "UPDATE media SET updated_at = now() - interval '1 hour' WHERE download = 't-stall'"
    )
    offline = await svc.client.post(retry, headers=tenant.headers)
    assert offline.status_code == 409
    assert offline.json()["error"]["code"] == "device_not_connected"
    stalled = await media_of(svc, tenant)
    assert stalled is not None
    assert stalled["status"] == "failed" and stalled["error"] == "The download did not finish"

    # a driver that cannot retry (yet) leaves it failed and retryable
    class Unsupported:
        async def handle(self, msg: Msg) -> None:
            await msg.respond(
                b'{"ok": false, "error": {"code": "retry_unsupported", '
                b'"message": "the neonize driver cannot fetch media again"}}'
            )

    sub = await svc.nc.subscribe(f"wa.cmd.{tenant.device_id}", cb=Unsupported().handle)
    await svc.nc.flush()
    try:
        refused = await svc.client.post(retry, headers=tenant.headers)
    finally:
        await sub.unsubscribe()
    assert refused.status_code == 409
    assert refused.json()["error"]["details"] == {"reason": "retry_unsupported"}
    still = await media_of(svc, tenant)
    assert still is not None
    assert still["status"] == "failed" and still["error"] == "The download did not finish"

    async with h.fake_worker(svc.nc, tenant.device_id) as worker:
        resp = await svc.client.post(retry, headers=tenant.headers)
    assert resp.status_code == 202 and resp.json()["media"]["status"] == "pending"
    assert worker.commands[0]["download"] == "t-stall"
