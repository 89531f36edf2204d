"""GET /api/chats, GET /api/chats/{id}, GET /api/chats/{id}/messages, POST /api/chats/{id}/read."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from clarin_common.ids import chat_id_for
from clarin_devkit.testing import eventually
from services.messaging.tests import helpers as h
from services.messaging.tests.helpers import Service, Tenant


async def _wait_messages(svc: Service, n: int) -> None:
    async def enough() -> bool:
        return int(await svc.ctx.pool.fetchval("SELECT count(*) FROM messages")) >= n

    await eventually(enough)


async def _seed(svc: Service, tenant: Tenant, phones: list[str], at: datetime) -> list[str]:
    for i, phone in enumerate(phones):
        await h.publish_wa(
            svc.nc, tenant, "message", h.inbound(f"S{i}-{phone}", phone=phone, sent_at=at)
        )
    return [chat_id_for(tenant.device_id, f"{p}@s.whatsapp.net") for p in phones]


class TestListChats:
    async def test_401(self, svc: Service) -> None:
        resp = await svc.client.get("/api/chats")
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "unauthorized"

    async def test_422_names_the_field(self, svc: Service) -> None:
        t = h.new_tenant()
        for params, loc in (
            ({"limit": 0}, ["query", "limit"]),
            ({"limit": 201}, ["query", "limit"]),
            ({"device_id": "nope"}, ["query", "device_id"]),
            ({"cursor": "!!garbage"}, ["query", "cursor"]),
            ({"unread": "perhaps"}, ["query", "unread"]),
        ):
            resp = await svc.client.get("/api/chats", params=params, headers=t.headers)
            assert resp.status_code == 422, (params, resp.text)
            assert loc in h.locs(resp)

    async def test_only_own_account_and_filters(self, svc: Service) -> None:
        t, other = h.new_tenant(), h.new_tenant()
        second_device = str(uuid.uuid4())
        h.DEVICES[second_device] = t.account_id
        now = datetime.now(UTC)
        await h.publish_wa(svc.nc, t, "message", h.inbound("A", phone="5215511111111"))
        await h.publish_wa(
            svc.nc,
            t,
            "message",
            h.inbound("B", phone="5215522222222", push_name="Bruno Díaz", sent_at=now),
            device_id=second_device,
        )
        await h.publish_wa(svc.nc, other, "message", h.inbound("C", phone="5215533333333"))
        await _wait_messages(svc, 3)

        resp = await svc.client.get("/api/chats", headers=t.headers)
        assert resp.status_code == 200
        body = resp.json()
        assert {c["phone"] for c in body["items"]} == {"5215511111111", "5215522222222"}
        assert body["next_cursor"] is None

        by_device = await svc.client.get(
            "/api/chats", params={"device_id": second_device}, headers=t.headers
        )
        assert [c["phone"] for c in by_device.json()["items"]] == ["5215522222222"]

        for q in ("bruno", "díaz", "22222", "+52 1 55 2222"):
            found = await svc.client.get("/api/chats", params={"q": q}, headers=t.headers)
            assert [c["phone"] for c in found.json()["items"]] == ["5215522222222"], q
        none = await svc.client.get("/api/chats", params={"q": "%"}, headers=t.headers)
        assert none.json()["items"] == []

        chat_a = chat_id_for(t.device_id, "5215511111111@s.whatsapp.net")
        assert (
            await svc.client.post(f"/api/chats/{chat_a}/read", headers=t.headers)
        ).status_code == 204
        unread = await svc.client.get("/api/chats", params={"unread": "true"}, headers=t.headers)
        assert [c["phone"] for c in unread.json()["items"]] == ["5215522222222"]

    async def test_newest_activity_first_and_cursor_with_ties(self, svc: Service) -> None:
        t = h.new_tenant()
        tie = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
        later = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
        tied = await _seed(svc, t, [f"52155000001{i:02d}" for i in range(7)], tie)
        newest = await _seed(svc, t, ["5215599999999"], later)
        await _wait_messages(svc, 8)

        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            resp = await svc.client.get("/api/chats", params=params, headers=t.headers)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            seen += [c["id"] for c in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen[0] == newest[0]
        assert len(seen) == len(set(seen)) == 8
        assert sorted(seen[1:]) == sorted(tied)
        # ties in time are ordered by id, descending
        assert seen[1:] == sorted(tied, reverse=True)


class TestGetChat:
    async def test_401_404_422_and_happy(self, svc: Service) -> None:
        t, other = h.new_tenant(), h.new_tenant()
        await h.publish_wa(svc.nc, t, "message", h.inbound("G1"))
        await _wait_messages(svc, 1)
        chat_id = chat_id_for(t.device_id, "5215512345678@s.whatsapp.net")

        assert (await svc.client.get(f"/api/chats/{chat_id}")).status_code == 401
        foreign = await svc.client.get(f"/api/chats/{chat_id}", headers=other.headers)
        assert foreign.status_code == 404
        assert foreign.json()["error"]["code"] == "chat_not_found"
        missing = await svc.client.get(f"/api/chats/{uuid.uuid4()}", headers=t.headers)
        assert missing.status_code == 404
        bad = await svc.client.get("/api/chats/not-a-uuid", headers=t.headers)
        assert bad.status_code == 422 and ["path", "chat_id"] in h.locs(bad)

        resp = await svc.client.get(f"/api/chats/{chat_id}", headers=t.headers)
        assert resp.status_code == 200
        chat = resp.json()
        # API.md's Chat, with the second wave's conversation fields (adding is allowed)
        assert set(chat) >= {
            "id",
            "device_id",
            "jid",
            "name",
            "phone",
            "last_message_preview",
            "last_message_at",
            "unread_count",
            "lead_id",
            "lid",
            "status",
            "assigned_to",
            "labels",
        }
        assert (chat["status"], chat["assigned_to"], chat["labels"]) == ("open", None, [])
        assert chat["jid"] == "5215512345678@s.whatsapp.net"
        assert chat["device_id"] == t.device_id
        assert chat["unread_count"] == 1


class TestChatMessages:
    async def test_401_404_422(self, svc: Service) -> None:
        t, other = h.new_tenant(), h.new_tenant()
        await h.publish_wa(svc.nc, t, "message", h.inbound("M1"))
        await _wait_messages(svc, 1)
        chat_id = chat_id_for(t.device_id, "5215512345678@s.whatsapp.net")
        url = f"/api/chats/{chat_id}/messages"
        assert (await svc.client.get(url)).status_code == 401
        assert (await svc.client.get(url, headers=other.headers)).status_code == 404
        bad = await svc.client.get(url, params={"limit": 500}, headers=t.headers)
        assert bad.status_code == 422 and ["query", "limit"] in h.locs(bad)
        bad_cursor = await svc.client.get(url, params={"cursor": "eyJ4Ijox"}, headers=t.headers)
        assert bad_cursor.status_code == 422 and ["query", "cursor"] in h.locs(bad_cursor)

    async def test_newest_first_with_ties_across_pages(self, svc: Service) -> None:
        t = h.new_tenant()
        tie = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
        for i in range(9):
            await h.publish_wa(svc.nc, t, "message", h.inbound(f"T{i}", body=f"b{i}", sent_at=tie))
        await h.publish_wa(
            svc.nc,
            t,
            "message",
            h.inbound("LAST", body="last", sent_at=datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
        )
        await _wait_messages(svc, 10)
        chat_id = chat_id_for(t.device_id, "5215512345678@s.whatsapp.net")
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 4}
            if cursor:
                params["cursor"] = cursor
            resp = await svc.client.get(
                f"/api/chats/{chat_id}/messages", params=params, headers=t.headers
            )
            assert resp.status_code == 200, resp.text
            seen += resp.json()["items"]
            cursor = resp.json()["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == 10
        assert len({m["id"] for m in seen}) == 10
        assert seen[0]["body"] == "last"
        ids = [m["id"] for m in seen[1:]]
        assert ids == sorted(ids, reverse=True)
        first = seen[0]
        assert set(first) >= {
            "id",
            "chat_id",
            "device_id",
            "wa_message_id",
            "direction",
            "type",
            "body",
            "media",
            "status",
            "sender_jid",
            "sender_name",
            "sent_at",
            "client_id",
        }
        assert first["sender_name"] == "Ana"
        assert first["media"] is None


class TestMarkRead:
    async def test_401_404_422(self, svc: Service) -> None:
        t, other = h.new_tenant(), h.new_tenant()
        await h.publish_wa(svc.nc, t, "message", h.inbound("R0"))
        await _wait_messages(svc, 1)
        chat_id = chat_id_for(t.device_id, "5215512345678@s.whatsapp.net")
        assert (await svc.client.post(f"/api/chats/{chat_id}/read")).status_code == 401
        foreign = await svc.client.post(f"/api/chats/{chat_id}/read", headers=other.headers)
        assert foreign.status_code == 404
        bad = await svc.client.post("/api/chats/xyz/read", headers=t.headers)
        assert bad.status_code == 422 and ["path", "chat_id"] in h.locs(bad)
        # the foreign attempt changed nothing
        chat = (await svc.client.get(f"/api/chats/{chat_id}", headers=t.headers)).json()
        assert chat["unread_count"] == 1

    async def test_read_sends_receipts_and_event(self, svc: Service) -> None:
        t = h.new_tenant()
        for i in range(3):
            await h.publish_wa(svc.nc, t, "message", h.inbound(f"R{i}"))
        await _wait_messages(svc, 3)
        chat_id = chat_id_for(t.device_id, "5215512345678@s.whatsapp.net")
        async with (
            h.fake_worker(svc.nc, t.device_id) as worker,
            h.app_events(svc.nc, t.account_id) as events,
        ):
            resp = await svc.client.post(f"/api/chats/{chat_id}/read", headers=t.headers)
            assert resp.status_code == 204
            await eventually(lambda: events.of("chat_read"))
        assert events.of("chat_read")[0]["data"] == {"chat_id": chat_id}
        assert len(worker.commands) == 1
        command = worker.commands[0]
        assert command["type"] == "mark_read"
        assert command["chat_jid"] == "5215512345678@s.whatsapp.net"
        assert sorted(command["wa_message_ids"]) == ["R0", "R1", "R2"]
        chat = (await svc.client.get(f"/api/chats/{chat_id}", headers=t.headers)).json()
        assert chat["unread_count"] == 0
        messages = (
            await svc.client.get(f"/api/chats/{chat_id}/messages", headers=t.headers)
        ).json()["items"]
        assert {m["status"] for m in messages} == {"read"}

        # nothing unread any more: no receipts to send again
        async with h.fake_worker(svc.nc, t.device_id) as worker:
            resp = await svc.client.post(f"/api/chats/{chat_id}/read", headers=t.headers)
            assert resp.status_code == 204
        assert worker.commands == []

    async def test_read_with_device_offline_still_zeroes(self, svc: Service) -> None:
        t = h.new_tenant()
        await h.publish_wa(svc.nc, t, "message", h.inbound("Q1"))
        await _wait_messages(svc, 1)
        chat_id = chat_id_for(t.device_id, "5215512345678@s.whatsapp.net")
        resp = await svc.client.post(f"/api/chats/{chat_id}/read", headers=t.headers)
        assert resp.status_code == 204
        chat = (await svc.client.get(f"/api/chats/{chat_id}", headers=t.headers)).json()
        assert chat["unread_count"] == 0
