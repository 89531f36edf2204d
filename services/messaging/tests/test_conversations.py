"""Chats as conversations: PATCH /api/chats/{id}, the list's status/assignee/label
filters, reopen on inbound, unread counts per tab, labels; private notes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from clarin_common.ids import chat_id_for
from clarin_common.outbox import PendingEvent
from clarin_devkit.testing import eventually
from services.messaging.tests import helpers as h
from services.messaging.tests.helpers import Service, Tenant

PHONE = "5215512345678"


async def _chat(svc: Service, t: Tenant, wa_id: str, phone: str = PHONE, **kw: Any) -> str:
    """A chat of ``t`` with one inbound message from ``phone``; returns its id."""
    await h.publish_wa(svc.nc, t, "message", h.inbound(wa_id, phone=phone, **kw))
    await eventually(
        lambda: svc.ctx.pool.fetchval("SELECT 1 FROM messages WHERE wa_message_id = $1", wa_id)
    )
    return chat_id_for(t.device_id, f"{phone}@s.whatsapp.net")


async def _ids(svc: Service, t: Tenant, **params: Any) -> set[str]:
    resp = await svc.client.get("/api/chats", params=params, headers=t.headers)
    assert resp.status_code == 200, resp.text
    return {c["id"] for c in resp.json()["items"]}


class TestPatchChat:
    async def test_401_404_422(self, svc: Service) -> None:
        t, other = h.new_tenant(), h.new_tenant()
        chat_id = await _chat(svc, t, "P1")
        url = f"/api/chats/{chat_id}"
        assert (await svc.client.patch(url, json={"status": "resolved"})).status_code == 401

        foreign = await svc.client.patch(url, json={"status": "resolved"}, headers=other.headers)
        assert foreign.status_code == 404
        assert foreign.json()["error"]["code"] == "chat_not_found"

        for body, loc in (
            ({"status": "closed"}, ["body", "status"]),
            ({"status": None}, ["body", "status"]),
            ({"labels": None}, ["body", "labels"]),
            ({"labels": ["x" * 41]}, ["body", "labels"]),
            ({"labels": ["  "]}, ["body", "labels"]),
            ({"labels": [f"l{i}" for i in range(21)]}, ["body", "labels"]),
            ({"assigned_to": "nobody"}, ["body", "assigned_to"]),
            # a well-formed id of a user of another account
            ({"assigned_to": other.user_id}, ["body", "assigned_to"]),
            ({"assigned_to": str(uuid.uuid4())}, ["body", "assigned_to"]),
        ):
            resp = await svc.client.patch(url, json=body, headers=t.headers)
            assert resp.status_code == 422, (body, resp.text)
            assert resp.json()["error"]["code"] == "validation_error"
            assert loc in [list(x[:2]) for x in h.locs(resp)], (body, resp.text)

        bad_id = await svc.client.patch("/api/chats/nope", json={}, headers=t.headers)
        assert bad_id.status_code == 422 and ["path", "chat_id"] in h.locs(bad_id)
        # nothing of that changed the chat
        chat = (await svc.client.get(url, headers=t.headers)).json()
        assert (chat["status"], chat["assigned_to"], chat["labels"]) == ("open", None, [])

    async def test_event_of_a_lost_publish_is_relayed_from_the_outbox(
        self, svc: Service, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The change's event is written with it: a publish after commit that did
        not happen (NATS down, a crash) is made up for by the relay."""
        t = h.new_tenant()
        chat_id = await _chat(svc, t, "P9")
        outbox = svc.ctx.outbox

        async def nats_unreachable(_: Sequence[PendingEvent]) -> None:
            return None  # what Outbox.publish does when NATS is down right after commit

        def resolved(events: h.AppEvents) -> bool:
            return any(e["data"]["chat"]["status"] == "resolved" for e in events.of("chat_updated"))

        async with h.app_events(svc.nc, t.account_id) as events:
            with monkeypatch.context() as patch:
                patch.setattr(outbox, "publish", nats_unreachable)
                resp = await svc.client.patch(
                    f"/api/chats/{chat_id}", json={"status": "resolved"}, headers=t.headers
                )
            assert resp.status_code == 200, resp.text
            staged = await svc.ctx.pool.fetchval(
                "SELECT count(*) FROM outbox WHERE subject = $1",
                f"app.{t.account_id}.chat_updated",
            )
            assert staged == 1
            assert await outbox.relay_once(grace=0) >= 1
            await eventually(lambda: resolved(events))
        assert await svc.ctx.pool.fetchval("SELECT count(*) FROM outbox") == 0

    async def test_assign_resolve_label_and_event(self, svc: Service) -> None:
        t = h.new_tenant()
        luis = t.colleague()
        chat_id = await _chat(svc, t, "P2")
        url = f"/api/chats/{chat_id}"
        async with h.app_events(svc.nc, t.account_id) as events:
            resp = await svc.client.patch(
                url,
                json={"assigned_to": luis.user_id, "labels": [" VIP ", "Mayorista", "vip"]},
                headers=t.headers,
            )
            assert resp.status_code == 200, resp.text
            chat = resp.json()
            assert chat["assigned_to"] == luis.user_id
            assert chat["labels"] == ["vip", "mayorista"]
            assert chat["status"] == "open"
            await eventually(lambda: events.of("chat_updated"))
            frame = events.of("chat_updated")[0]
            assert frame["data"]["chat"]["id"] == chat_id
            assert frame["data"]["chat"]["assigned_to"] == luis.user_id

            # the colleague resolves it; only status changes
            resp = await svc.client.patch(url, json={"status": "resolved"}, headers=luis.headers)
            assert resp.status_code == 200
            assert resp.json()["status"] == "resolved"
            assert resp.json()["labels"] == ["vip", "mayorista"]
            assert resp.json()["assigned_to"] == luis.user_id
            await eventually(lambda: len(events.of("chat_updated")) == 2)

            # unassign
            resp = await svc.client.patch(url, json={"assigned_to": None}, headers=t.headers)
            assert resp.status_code == 200 and resp.json()["assigned_to"] is None
            await eventually(lambda: len(events.of("chat_updated")) == 3)

        stored = (await svc.client.get(url, headers=t.headers)).json()
        assert (stored["status"], stored["assigned_to"], stored["labels"]) == (
            "resolved",
            None,
            ["vip", "mayorista"],
        )

    async def test_assigning_oneself_needs_no_auth(self, svc: Service) -> None:
        t = h.new_tenant()
        h.USERS.pop(t.account_id)  # auth would not list this account's users
        chat_id = await _chat(svc, t, "P3")
        resp = await svc.client.patch(
            f"/api/chats/{chat_id}", json={"assigned_to": t.user_id}, headers=t.headers
        )
        assert resp.status_code == 200 and resp.json()["assigned_to"] == t.user_id


class TestListFilters:
    async def test_status_assignee_label(self, svc: Service) -> None:
        t = h.new_tenant()
        luis = t.colleague()
        mine = await _chat(svc, t, "F1", phone="5215500000001")
        theirs = await _chat(svc, t, "F2", phone="5215500000002")
        nobody = await _chat(svc, t, "F3", phone="5215500000003")
        done = await _chat(svc, t, "F4", phone="5215500000004")
        for chat_id, body in (
            (mine, {"assigned_to": t.user_id, "labels": ["vip"]}),
            (theirs, {"assigned_to": luis.user_id, "status": "pending"}),
            (nobody, {"labels": ["VIP", "factura"]}),
            (done, {"assigned_to": t.user_id, "status": "resolved"}),
        ):
            resp = await svc.client.patch(f"/api/chats/{chat_id}", json=body, headers=t.headers)
            assert resp.status_code == 200, resp.text

        assert await _ids(svc, t) == {mine, theirs, nobody, done}
        assert await _ids(svc, t, assigned_to="me") == {mine, done}
        assert await _ids(svc, t, assigned_to="me", status="open") == {mine}
        assert await _ids(svc, luis, assigned_to="me") == {theirs}
        assert await _ids(svc, t, assigned_to=luis.user_id) == {theirs}
        assert await _ids(svc, t, assigned_to="none") == {nobody}
        assert await _ids(svc, t, status="pending") == {theirs}
        assert await _ids(svc, t, status="resolved") == {done}
        assert await _ids(svc, t, label="vip") == {mine, nobody}
        assert await _ids(svc, t, label=" VIP ") == {mine, nobody}
        assert await _ids(svc, t, label="vip", assigned_to="none") == {nobody}
        assert await _ids(svc, t, label="nada") == set()

        # another account sees none of it, whatever the filter
        other = h.new_tenant()
        assert await _ids(svc, other, label="vip") == set()
        assert await _ids(svc, other, assigned_to=t.user_id) == set()

        labels = await svc.client.get("/api/chats/labels", headers=t.headers)
        assert labels.json() == {
            "items": [{"label": "factura", "chats": 1}, {"label": "vip", "chats": 2}]
        }
        assert (await svc.client.get("/api/chats/labels", headers=other.headers)).json() == {
            "items": []
        }

    async def test_422_names_the_field(self, svc: Service) -> None:
        t = h.new_tenant()
        for params, loc in (
            ({"status": "closed"}, ["query", "status"]),
            ({"assigned_to": "someone"}, ["query", "assigned_to"]),
            ({"label": "x" * 41}, ["query", "label"]),
        ):
            resp = await svc.client.get("/api/chats", params=params, headers=t.headers)
            assert resp.status_code == 422, (params, resp.text)
            assert loc in h.locs(resp)
        assert (await svc.client.get("/api/chats/counts")).status_code == 401
        assert (await svc.client.get("/api/chats/labels")).status_code == 401

    async def test_pages_of_a_filter(self, svc: Service) -> None:
        t = h.new_tenant()
        ids = []
        for i in range(5):
            chat_id = await _chat(svc, t, f"G{i}", phone=f"52155000001{i:02d}")
            ids.append(chat_id)
            await svc.client.patch(
                f"/api/chats/{chat_id}", json={"assigned_to": t.user_id}, headers=t.headers
            )
        await _chat(svc, t, "G-other", phone="5215500000199")
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"assigned_to": "me", "status": "open", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await svc.client.get("/api/chats", params=params, headers=t.headers)).json()
            seen += [c["id"] for c in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(ids) and len(seen) == 5


class TestReopenAndCounts:
    async def test_inbound_reopens_a_resolved_chat(self, svc: Service) -> None:
        t = h.new_tenant()
        chat_id = await _chat(svc, t, "O1")
        await svc.client.patch(
            f"/api/chats/{chat_id}", json={"status": "resolved"}, headers=t.headers
        )
        async with h.app_events(svc.nc, t.account_id) as events:
            await h.publish_wa(svc.nc, t, "message", h.inbound("O2", body="¿Sigue en pie?"))
            await eventually(lambda: events.of("new_message"))
            await eventually(lambda: events.of("chat_updated"))
        assert events.of("new_message")[0]["data"]["chat"]["status"] == "open"
        assert events.of("chat_updated")[0]["data"]["chat"]["status"] == "open"
        chat = (await svc.client.get(f"/api/chats/{chat_id}", headers=t.headers)).json()
        assert chat["status"] == "open"

        # only resolved chats reopen: a pending one stays pending
        await svc.client.patch(
            f"/api/chats/{chat_id}", json={"status": "pending"}, headers=t.headers
        )
        await _chat(svc, t, "O3")
        chat = (await svc.client.get(f"/api/chats/{chat_id}", headers=t.headers)).json()
        assert chat["status"] == "pending"

    async def test_unread_counts_per_tab(self, svc: Service) -> None:
        t = h.new_tenant()
        luis = t.colleague()
        a = await _chat(svc, t, "C1", phone="5215500000011")
        b = await _chat(svc, t, "C2", phone="5215500000012")
        await _chat(svc, t, "C3", phone="5215500000013")
        await svc.client.patch(
            f"/api/chats/{a}", json={"assigned_to": t.user_id}, headers=t.headers
        )
        await svc.client.patch(
            f"/api/chats/{b}",
            json={"assigned_to": luis.user_id, "status": "resolved"},
            headers=t.headers,
        )
        counts = await svc.client.get("/api/chats/counts", headers=t.headers)
        assert counts.json() == {"all": 3, "mine": 1, "unassigned": 1}
        open_only = await svc.client.get(
            "/api/chats/counts", params={"status": "open"}, headers=t.headers
        )
        assert open_only.json() == {"all": 2, "mine": 1, "unassigned": 1}
        assert (await svc.client.get("/api/chats/counts", headers=luis.headers)).json()["mine"] == 1
        await svc.client.post(f"/api/chats/{a}/read", headers=t.headers)
        counts = await svc.client.get("/api/chats/counts", headers=t.headers)
        assert counts.json() == {"all": 2, "mine": 0, "unassigned": 1}
        other = h.new_tenant()
        assert (await svc.client.get("/api/chats/counts", headers=other.headers)).json() == {
            "all": 0,
            "mine": 0,
            "unassigned": 0,
        }


class TestNotes:
    async def test_401_404_422(self, svc: Service) -> None:
        t, other = h.new_tenant(), h.new_tenant()
        chat_id = await _chat(svc, t, "N1")
        url = f"/api/chats/{chat_id}/notes"
        assert (await svc.client.post(url, json={"body": "x"})).status_code == 401
        foreign = await svc.client.post(url, json={"body": "x"}, headers=other.headers)
        assert foreign.status_code == 404
        for body in ({}, {"body": ""}, {"body": "   "}, {"body": "x" * 65537}):
            resp = await svc.client.post(url, json=body, headers=t.headers)
            assert resp.status_code == 422, body
            assert ["body", "body"] in [list(x[:2]) for x in h.locs(resp)]
        assert await svc.ctx.pool.fetchval("SELECT count(*) FROM messages") == 1

    async def test_note_in_timeline_never_to_the_worker(self, svc: Service) -> None:
        t = h.new_tenant()
        chat_id = await _chat(svc, t, "N2", body="¿Me mandan precio?")
        before = (await svc.client.get(f"/api/chats/{chat_id}", headers=t.headers)).json()
        async with (
            h.fake_worker(svc.nc, t.device_id) as worker,
            h.app_events(svc.nc, t.account_id) as events,
        ):
            resp = await svc.client.post(
                f"/api/chats/{chat_id}/notes",
                json={"body": "Cliente mayorista: ofrecer 10 %", "client_id": "note-1"},
                headers=t.headers,
            )
            assert resp.status_code == 201, resp.text
            note = resp.json()
            assert note["direction"] == "note"
            assert note["author_id"] == t.user_id
            assert note["wa_message_id"] is None
            again = await svc.client.post(
                f"/api/chats/{chat_id}/notes",
                json={"body": "Cliente mayorista: ofrecer 10 %", "client_id": "note-1"},
                headers=t.headers,
            )
            assert again.status_code == 201 and again.json()["id"] == note["id"]
            await eventually(lambda: events.of("new_message"))
            assert events.of("new_message")[0]["data"]["message"]["direction"] == "note"

            # a real reply afterwards reaches the worker; the note never did
            sent = await svc.client.post(
                "/api/messages/send", json={"chat_id": chat_id, "body": "Hola"}, headers=t.headers
            )
            assert sent.status_code == 202
            await eventually(lambda: worker.commands)
        assert [c["type"] for c in worker.commands] == ["send_text"]
        assert all("mayorista" not in str(c) for c in worker.commands)

        timeline = (
            await svc.client.get(f"/api/chats/{chat_id}/messages", headers=t.headers)
        ).json()["items"]
        assert [m["direction"] for m in timeline] == ["out", "note", "in"]
        # the note changed neither unread nor the inbox preview
        after = (await svc.client.get(f"/api/chats/{chat_id}", headers=t.headers)).json()
        assert after["unread_count"] == before["unread_count"] == 1
        assert after["last_message_preview"] == "Hola"
