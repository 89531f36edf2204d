"""The wa.evt consumer: batches, idempotency, receipts, poison, crash safety, lead links."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from clarin_common.events import AppType, MediaRef, WaMessage, app_envelope, app_event_subject
from clarin_common.ids import chat_id_for
from clarin_common.nats import ensure_object_store, publish_event
from clarin_common.outbox import PendingEvent
from clarin_devkit.testing import eventually
from services.messaging.tests import helpers as h
from services.messaging.tests.helpers import Service


async def count_in_chat(svc: Service, chat_id: str) -> int:
    return int(
        await svc.ctx.pool.fetchval("SELECT count(*) FROM messages WHERE chat_id=$1", chat_id)
    )


async def test_inbound_message_creates_chat_and_event(svc: Service) -> None:
    tenant = h.new_tenant()
    async with h.app_events(svc.nc, tenant.account_id) as events:
        await h.publish_wa(svc.nc, tenant, "message", h.inbound("W1", body="hola"))
        await eventually(lambda: events.of("new_message"))
    chats = await h.chats_of(svc, tenant)
    chat_id = chat_id_for(tenant.device_id, "5215512345678@s.whatsapp.net")
    assert [c["id"] for c in chats] == [chat_id]
    chat = chats[0]
    assert chat["unread_count"] == 1
    assert chat["name"] == "Ana" and chat["phone"] == "5215512345678"
    assert chat["last_message_preview"] == "hola"
    frame = events.of("new_message")[0]
    assert frame["account_id"] == tenant.account_id
    assert frame["data"]["message"]["body"] == "hola"
    assert frame["data"]["message"]["direction"] == "in"
    assert frame["data"]["message"]["status"] == "received"
    assert frame["data"]["chat"]["unread_count"] == 1
    messages = await h.messages_of(svc, tenant, chat_id)
    assert [m["wa_message_id"] for m in messages] == ["W1"]


async def test_events_of_a_batch_whose_publish_was_lost_are_relayed(
    svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer writes a batch's events in its transaction: if publishing
    them after the commit fails, the WA event is still acked and the relay
    publishes them later."""
    tenant = h.new_tenant()
    outbox = svc.ctx.outbox

    async def nats_unreachable(_: Sequence[PendingEvent]) -> None:
        return None  # what Outbox.publish does when NATS is down right after commit

    async with h.app_events(svc.nc, tenant.account_id) as events:
        with monkeypatch.context() as patch:
            patch.setattr(outbox, "publish", nats_unreachable)
            await h.publish_wa(svc.nc, tenant, "message", h.inbound("LOST1", body="kept"))

            async def staged() -> bool:
                count = await svc.ctx.pool.fetchval(
                    "SELECT count(*) FROM outbox WHERE subject = $1",
                    f"app.{tenant.account_id}.new_message",
                )
                return bool(count == 1)

            await eventually(staged)
        assert await outbox.relay_once(grace=0) >= 1
        await eventually(lambda: events.of("new_message"))
    assert events.of("new_message")[0]["data"]["message"]["body"] == "kept"


async def test_same_event_twice_and_same_wa_id_in_two_events(svc: Service) -> None:
    tenant = h.new_tenant()
    payload = h.inbound("DUP1", body="once")
    # a redelivery past JetStream's duplicate window, and WhatsApp sending it again
    await h.publish_wa(svc.nc, tenant, "message", payload)
    await h.publish_wa(svc.nc, tenant, "message", payload)
    again = payload.model_copy(update={"body": "changed?"})
    await h.publish_wa(svc.nc, tenant, "message", again)
    await h.publish_wa(svc.nc, tenant, "message", h.inbound("OTHER", body="after"))
    chat_id = chat_id_for(tenant.device_id, payload.chat_jid)

    async def done() -> bool:
        return await count_in_chat(svc, chat_id) == 2

    await eventually(done)
    await asyncio.sleep(0.3)  # anything late would show now
    messages = await h.messages_of(svc, tenant, chat_id)
    assert sorted(m["body"] for m in messages) == ["after", "once"]
    chat = (await h.chats_of(svc, tenant))[0]
    assert chat["unread_count"] == 2


async def test_duplicates_inside_one_batch(svc: Service) -> None:
    tenant = h.new_tenant()
    await svc.ctx.consumers[0].stop()
    for _ in range(3):
        await h.publish_wa(svc.nc, tenant, "message", h.inbound("SAME", body="x"))
    await h.publish_wa(svc.nc, tenant, "message", h.inbound("NEXT", body="y"))
    # one consumer, one batch holding all four
    from clarin_messaging.consumers import wa_events_consumer

    consumer = wa_events_consumer(svc.ctx)
    await consumer.start()
    try:
        chat_id = chat_id_for(tenant.device_id, "5215512345678@s.whatsapp.net")

        async def unread() -> int:
            row = await svc.ctx.pool.fetchrow("SELECT unread_count FROM chats WHERE id=$1", chat_id)
            return row["unread_count"] if row else 0

        await eventually(lambda: unread())
        await asyncio.sleep(0.3)
        assert await unread() == 2
        assert len(await h.messages_of(svc, tenant, chat_id)) == 2
    finally:
        await consumer.stop()


async def test_receipts_never_downgrade(svc: Service) -> None:
    tenant = h.new_tenant()
    out = WaMessage(
        wa_message_id="OUT1",
        chat_jid="5215512345678@s.whatsapp.net",
        direction="out",
        body="sent from the phone",
        sent_at=datetime.now(UTC),
    )
    async with h.app_events(svc.nc, tenant.account_id) as events:
        await h.publish_wa(svc.nc, tenant, "message", out)
        await h.publish_wa(svc.nc, tenant, "receipt", h.receipt(["OUT1"], "read"))
        await h.publish_wa(svc.nc, tenant, "receipt", h.receipt(["OUT1"], "delivered"))
        await h.publish_wa(svc.nc, tenant, "receipt", h.receipt(["OUT1"], "played"))
        await h.publish_wa(svc.nc, tenant, "message", h.inbound("MARK"))
        await eventually(lambda: len(events.of("new_message")) == 2)
    chat_id = chat_id_for(tenant.device_id, out.chat_jid)
    messages = {m["wa_message_id"]: m for m in await h.messages_of(svc, tenant, chat_id)}
    assert messages["OUT1"]["status"] == "read"
    assert messages["OUT1"]["direction"] == "out"
    statuses = [e["data"]["status"] for e in events.of("message_status")]
    assert statuses == ["read"]
    # outbound messages are not unread
    assert (await h.chats_of(svc, tenant))[0]["unread_count"] == 1


async def test_receipts_in_order_move_forward(svc: Service) -> None:
    tenant = h.new_tenant()
    out = WaMessage(
        wa_message_id="OUT2",
        chat_jid="5215512345678@s.whatsapp.net",
        direction="out",
        body="hi",
        sent_at=datetime.now(UTC),
    )
    async with h.app_events(svc.nc, tenant.account_id) as events:
        await h.publish_wa(svc.nc, tenant, "message", out)
        await eventually(lambda: events.of("new_message"))
        await h.publish_wa(svc.nc, tenant, "receipt", h.receipt(["OUT2"], "delivered"))
        await eventually(lambda: events.of("message_status"))
        await h.publish_wa(svc.nc, tenant, "receipt", h.receipt(["OUT2"], "read"))
        await eventually(lambda: len(events.of("message_status")) == 2)
    assert [e["data"]["status"] for e in events.of("message_status")] == ["delivered", "read"]


async def test_poison_messages_are_terminated(svc: Service) -> None:
    tenant = h.new_tenant()
    js = svc.nc.jetstream()
    subject = f"wa.evt.{tenant.account_id}.{tenant.device_id}.message"
    await js.publish(subject, b"{not json", headers={"Nats-Msg-Id": "bad-json"})
    bad = app_envelope(tenant.account_id, "new_message", h.inbound("X"))
    bad_payload = bad.model_dump(mode="json")
    bad_payload["type"] = "message"
    bad_payload["device_id"] = tenant.device_id
    bad_payload["data"] = {"wa_message_id": "NOPE"}  # valid envelope, invalid WaMessage
    import json

    await js.publish(subject, json.dumps(bad_payload).encode(), headers={"Nats-Msg-Id": "bad-data"})
    await h.publish_wa(svc.nc, tenant, "message", h.inbound("GOOD1", body="good"))
    await h.publish_wa(svc.nc, tenant, "message", h.inbound("GOOD2", body="good too"))
    chat_id = chat_id_for(tenant.device_id, "5215512345678@s.whatsapp.net")

    async def both() -> bool:
        return await count_in_chat(svc, chat_id) == 2

    await eventually(both)

    # the poison ones were terminated, not left to be redelivered forever
    async def settled() -> bool:
        info = await js.consumer_info("WA_EVENTS", "messaging")
        return bool(
            info.num_ack_pending == 0
            and info.num_pending == 0
            and info.ack_floor.stream_seq == info.delivered.stream_seq
        )

    await eventually(settled)
    info = await js.consumer_info("WA_EVENTS", "messaging")
    assert info.num_redelivered == 0


async def test_kill_consumer_mid_flight_loses_and_doubles_nothing(
    clean_state: None, nats_client: NatsClient, tmp_path: Path, devices_url: str
) -> None:
    tenant = h.new_tenant()
    total, phones = 600, 6
    for i in range(total):
        await h.publish_wa(
            nats_client,
            tenant,
            "message",
            h.inbound(f"K{i}", phone=f"52155000000{i % phones}", body=f"m{i}"),
        )
    async with h.service(
        nats_client, tmp_path, devices_url, consumer_batch_size=50, consumer_ack_wait=1.0
    ) as svc:
        consumer = svc.ctx.consumers[0]

        async def some() -> bool:
            return await h.count_rows(svc, "SELECT count(*) FROM messages") > 0

        await eventually(some, timeout=10, interval=0.005)
        # kill: no graceful stop, whatever is in hand is neither finished nor acked
        assert consumer._task is not None
        consumer._task.cancel()
        partial = await h.count_rows(svc, "SELECT count(*) FROM messages")
    assert partial < total

    async with h.service(
        nats_client, tmp_path, devices_url, consumer_batch_size=50, consumer_ack_wait=1.0
    ) as svc:

        async def all_in() -> bool:
            return await h.count_rows(svc, "SELECT count(*) FROM messages") == total

        await eventually(all_in, timeout=30)
        await asyncio.sleep(1.5)  # redeliveries after ack_wait would arrive by now
        assert await h.count_rows(svc, "SELECT count(*) FROM messages") == total
        assert (
            await h.count_rows(svc, "SELECT count(DISTINCT wa_message_id) FROM messages") == total
        )
        assert await h.count_rows(svc, "SELECT sum(unread_count) FROM chats") == total
        assert await h.count_rows(svc, "SELECT count(*) FROM chats") == phones


async def test_lead_link_from_lead_events(svc: Service) -> None:
    from clarin_common.contract import Lead
    from clarin_common.events import LeadData, LeadDeletedData

    tenant = h.new_tenant()
    other = h.new_tenant()
    await h.publish_wa(svc.nc, tenant, "message", h.inbound("L1", phone="5215511111111"))
    await h.publish_wa(svc.nc, tenant, "message", h.inbound("L2", phone="5215522222222"))
    await h.publish_wa(svc.nc, other, "message", h.inbound("L3", phone="5215511111111"))
    await eventually(lambda: _count_chats(svc, 3))
    chat2 = chat_id_for(tenant.device_id, "5215522222222@s.whatsapp.net")
    now = datetime.now(UTC)

    def lead(phone: str | None, chat_id: str | None, lead_id: str, at: datetime) -> Lead:
        return Lead(
            id=lead_id,
            account_id=tenant.account_id,
            name="Ana",
            phone=phone,
            stage="new",
            source="whatsapp",
            chat_id=chat_id,
            created_at=at,
            updated_at=at,
        )

    js = svc.nc.jetstream()
    by_phone, by_chat = str(uuid.uuid4()), str(uuid.uuid4())
    created: list[tuple[AppType, LeadData]] = [
        ("lead_created", LeadData(lead=lead("+52 1 55 1111 1111", None, by_phone, now))),
        ("lead_created", LeadData(lead=lead(None, chat2, by_chat, now))),
    ]
    for type_, data in created:
        await publish_event(
            js,
            app_event_subject(tenant.account_id, type_),
            app_envelope(tenant.account_id, type_, data),
        )

    async def linked() -> dict[str, Any]:
        return {c["phone"]: c["lead_id"] for c in await h.chats_of(svc, tenant)}

    await eventually(lambda: _eq(linked(), {"5215511111111": by_phone, "5215522222222": by_chat}))
    # another account's chat with the same phone stays unlinked
    assert (await h.chats_of(svc, other))[0]["lead_id"] is None

    # a lead created before its chat: the chat is linked when it appears
    early = str(uuid.uuid4())
    await publish_event(
        js,
        app_event_subject(tenant.account_id, "lead_created"),
        app_envelope(
            tenant.account_id,
            "lead_created",
            LeadData(lead=lead("5215533333333", None, early, now)),
        ),
    )
    await asyncio.sleep(0.5)
    await h.publish_wa(svc.nc, tenant, "message", h.inbound("L4", phone="5215533333333"))
    await eventually(lambda: _has(linked(), "5215533333333", early))

    await publish_event(
        js,
        app_event_subject(tenant.account_id, "lead_deleted"),
        app_envelope(tenant.account_id, "lead_deleted", LeadDeletedData(lead_id=by_phone)),
    )
    await eventually(lambda: _has(linked(), "5215511111111", None))

    # the lead's phone changes (and a stale update arrives after the newer one): the
    # chat of the new phone is linked, the old one unlinked
    later = now + timedelta(seconds=5)
    for data in (
        LeadData(lead=lead("5215511111111", None, early, later)),
        LeadData(lead=lead("5215533333333", None, early, now + timedelta(seconds=1))),
    ):
        await publish_event(
            js,
            app_event_subject(tenant.account_id, "lead_updated"),
            app_envelope(tenant.account_id, "lead_updated", data),
        )
    await eventually(
        lambda: _eq(
            linked(),
            {"5215511111111": early, "5215522222222": by_chat, "5215533333333": None},
        )
    )


async def _count_chats(svc: Service, n: int) -> bool:
    return int(await svc.ctx.pool.fetchval("SELECT count(*) FROM chats")) == n


async def _eq(value: Awaitable[object], expected: object) -> bool:
    return bool((await value) == expected)


async def _has(value: Awaitable[dict[str, Any]], key: str, expected: object) -> bool:
    return bool((await value).get(key, "missing") == expected)


async def test_inbound_media_copied_to_media_store(svc: Service) -> None:
    tenant = h.new_tenant()
    data = bytes(range(256)) * 40
    objects = await ensure_object_store(svc.nc.jetstream())
    await objects.put("in/abc", data)
    ref = MediaRef(
        object_key="in/abc",
        mime_type="image/jpeg",
        file_name="photo.jpg",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    await h.publish_wa(
        svc.nc, tenant, "message", h.inbound("IMG1", body=None, media=ref, type_="image")
    )
    chat_id = chat_id_for(tenant.device_id, "5215512345678@s.whatsapp.net")
    await eventually(lambda: _ge(count_in_chat(svc, chat_id), 1))
    message = (await h.messages_of(svc, tenant, chat_id))[0]
    assert message["type"] == "image"
    assert message["media"] == {
        "url": f"/api/media/{message['id']}",
        "mime_type": "image/jpeg",
        "file_name": "photo.jpg",
        "size": len(data),
        "status": "ready",
        "error": None,
    }
    resp = await svc.client.get(message["media"]["url"], headers=tenant.headers)
    assert resp.status_code == 200
    assert resp.content == data
    assert resp.headers["content-type"] == "image/jpeg"
    assert "photo.jpg" in resp.headers["content-disposition"]
    assert (await h.chats_of(svc, tenant))[0]["last_message_preview"] == "📷 Photo"

    # the object store copy is gone once ours is committed
    async def deleted() -> bool:
        try:
            await objects.get("in/abc")
        except Exception:
            return True
        return False

    await eventually(deleted)
    other = h.new_tenant()
    resp = await svc.client.get(message["media"]["url"], headers=other.headers)
    assert resp.status_code == 404


async def test_history_order_keeps_latest_preview(svc: Service) -> None:
    tenant = h.new_tenant()
    now = datetime.now(UTC)
    await h.publish_wa(svc.nc, tenant, "message", h.inbound("N", body="newest", sent_at=now))
    await h.publish_wa(
        svc.nc, tenant, "message", h.inbound("O", body="older", sent_at=now - timedelta(hours=1))
    )
    chat_id = chat_id_for(tenant.device_id, "5215512345678@s.whatsapp.net")
    await eventually(lambda: _ge(count_in_chat(svc, chat_id), 2))
    chat = (await h.chats_of(svc, tenant))[0]
    assert chat["last_message_preview"] == "newest"
    assert [m["body"] for m in await h.messages_of(svc, tenant, chat_id)] == ["newest", "older"]


async def _ge(value: Awaitable[int], n: int) -> bool:
    return int(await value) >= n


def test_message_id_for_is_the_uuid5_of_device_and_wa_message_id() -> None:
    """Rows stored before the fast path keep their ids: the same event maps to
    the same message as ``uuid.uuid5`` always gave."""
    from clarin_messaging.ingest.service import _MESSAGE_NAMESPACE, message_id_for

    device = str(uuid.uuid4())
    for wa_id in ["3EB0C767D26A1B2F9F3A", "", "ñandú 😀|:@", "x" * 300]:
        expected = str(uuid.uuid5(_MESSAGE_NAMESPACE, f"{device}|{wa_id}"))
        assert message_id_for(device, wa_id) == expected
