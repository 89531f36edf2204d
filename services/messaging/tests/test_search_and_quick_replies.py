"""GET /api/search/messages and /api/quick-replies."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from clarin_devkit.testing import eventually
from clarin_messaging.search.repository import search_for_account
from services.messaging.tests import helpers as h
from services.messaging.tests.helpers import Service, Tenant


async def _messages(svc: Service, t: Tenant, bodies: list[str], **kw: Any) -> None:
    start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    for i, body in enumerate(bodies):
        await h.publish_wa(
            svc.nc,
            t,
            "message",
            h.inbound(
                f"{t.account_id[:8]}-{i}", body=body, sent_at=start + timedelta(minutes=i), **kw
            ),
        )

    async def stored() -> bool:
        n = await svc.ctx.pool.fetchval(
            "SELECT count(*) FROM messages WHERE account_id = $1", t.account_id
        )
        return int(n) >= len(bodies)

    await eventually(stored)


async def _search(svc: Service, t: Tenant, **params: Any) -> dict[str, Any]:
    resp = await svc.client.get("/api/search/messages", params=params, headers=t.headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


class TestSearch:
    async def test_401_and_422(self, svc: Service) -> None:
        t = h.new_tenant()
        assert (await svc.client.get("/api/search/messages", params={"q": "x"})).status_code == 401
        cases: list[tuple[dict[str, str | int], list[str]]] = [
            ({}, ["query", "q"]),
            ({"q": ""}, ["query", "q"]),
            ({"q": "¿?¡! ☕"}, ["query", "q"]),
            ({"q": "x" * 201}, ["query", "q"]),
            ({"q": "x", "limit": 0}, ["query", "limit"]),
            ({"q": "x", "device_id": "d"}, ["query", "device_id"]),
            ({"q": "x", "cursor": "garbage!"}, ["query", "cursor"]),
        ]
        for params, loc in cases:
            resp = await svc.client.get("/api/search/messages", params=params, headers=t.headers)
            assert resp.status_code == 422, (params, resp.text)
            assert loc in h.locs(resp), params

    async def test_accent_and_case_insensitive_scoped_to_the_account(self, svc: Service) -> None:
        t, other = h.new_tenant(), h.new_tenant()
        await _messages(
            svc,
            t,
            ["¿Tienen CAFÉ de Oaxaca?", "Quiero un té", "El cafe llegó frío", "Mañana paso"],
        )
        await _messages(svc, other, ["café para otra cuenta"], phone="5215599999999")

        for q in ("cafe", "café", "CAFE", "Cafè"):
            found = await _search(svc, t, q=q)
            assert sorted(hit["message"]["body"] for hit in found["items"]) == [
                "El cafe llegó frío",
                "¿Tienen CAFÉ de Oaxaca?",
            ], q
        hit = (await _search(svc, t, q="manana"))["items"][0]
        assert hit["message"]["body"] == "Mañana paso"
        assert hit["chat"]["id"] == hit["message"]["chat_id"]
        assert hit["chat"]["phone"] == "5215512345678"
        # every word must appear; a word also matches as a prefix
        assert [h_["message"]["body"] for h_ in (await _search(svc, t, q="cafe oax"))["items"]] == [
            "¿Tienen CAFÉ de Oaxaca?"
        ]
        assert (await _search(svc, t, q="cafe tea"))["items"] == []
        # the other account's café is never found from here, and vice versa
        assert [x["message"]["body"] for x in (await _search(svc, other, q="cafe"))["items"]] == [
            "café para otra cuenta"
        ]
        assert (await _search(svc, t, q="otra cuenta"))["items"] == []
        # the device filter
        assert (await _search(svc, t, q="cafe", device_id=str(uuid.uuid4())))["items"] == []
        assert len((await _search(svc, t, q="cafe", device_id=t.device_id))["items"]) == 2

    async def test_ranked_then_newest_and_cursor_pages(self, svc: Service) -> None:
        t = h.new_tenant()
        bodies = [f"pedido número {i}" for i in range(7)]
        bodies.insert(3, "pedidos pendientes")  # matches "pedido" only as a prefix
        bodies.append("pedido pedido: dos veces el pedido")  # the best match
        await _messages(svc, t, bodies)

        first = await _search(svc, t, q="pedido", limit=3)
        assert first["items"][0]["message"]["body"] == "pedido pedido: dos veces el pedido"
        seen = list(first["items"])
        cursor = first["next_cursor"]
        while cursor:
            page = await _search(svc, t, q="pedido", limit=3, cursor=cursor)
            seen += page["items"]
            cursor = page["next_cursor"]
        assert len(seen) == 9 and len({x["message"]["id"] for x in seen}) == 9
        # whole-word matches of equal weight come newest first; the prefix-only one last
        assert [x["message"]["body"] for x in seen[1:8]] == [
            f"pedido número {i}" for i in range(6, -1, -1)
        ]
        assert seen[-1]["message"]["body"] == "pedidos pendientes"

    async def test_ranking_covers_the_newest_candidates(self, svc: Service) -> None:
        t = h.new_tenant()
        # the oldest message is the best match
        await _messages(svc, t, ["pedido pedido pedido"] + [f"pedido {i}" for i in range(4)])
        best = (await _search(svc, t, q="pedido"))["items"][0]["message"]["body"]
        assert best == "pedido pedido pedido"
        # with room for three candidates only the three newest are ranked
        rows = await search_for_account(
            svc.ctx.pool, t.account_id, "pedido", device_id=None, after=None, limit=10, candidates=3
        )
        assert [r["body"] for r in rows] == ["pedido 3", "pedido 2", "pedido 1"]

    async def test_notes_are_found_too(self, svc: Service) -> None:
        t = h.new_tenant()
        await _messages(svc, t, ["hola"])
        chat_id = (await svc.client.get("/api/chats", headers=t.headers)).json()["items"][0]["id"]
        resp = await svc.client.post(
            f"/api/chats/{chat_id}/notes", json={"body": "Llamar el miércoles"}, headers=t.headers
        )
        assert resp.status_code == 201
        found = (await _search(svc, t, q="miercoles"))["items"]
        assert [x["message"]["direction"] for x in found] == ["note"]


class TestQuickReplies:
    async def test_401_422_404(self, svc: Service) -> None:
        t, other = h.new_tenant(), h.new_tenant()
        assert (await svc.client.get("/api/quick-replies")).status_code == 401
        assert (
            await svc.client.post("/api/quick-replies", json={"shortcut": "a", "body": "b"})
        ).status_code == 401
        for body, loc in (
            ({"shortcut": "hola mundo", "body": "x"}, ["body", "shortcut"]),
            ({"shortcut": "/hola", "body": "x"}, ["body", "shortcut"]),
            ({"shortcut": "", "body": "x"}, ["body", "shortcut"]),
            ({"shortcut": "x" * 41, "body": "x"}, ["body", "shortcut"]),
            ({"shortcut": "hola", "body": "  "}, ["body", "body"]),
            ({"shortcut": "hola"}, ["body", "body"]),
        ):
            resp = await svc.client.post("/api/quick-replies", json=body, headers=t.headers)
            assert resp.status_code == 422, (body, resp.text)
            assert loc in [list(x[:2]) for x in h.locs(resp)], body

        created = await svc.client.post(
            "/api/quick-replies", json={"shortcut": "hola", "body": "Hola"}, headers=t.headers
        )
        reply_id = created.json()["id"]
        url = f"/api/quick-replies/{reply_id}"
        assert (
            await svc.client.put(url, json={"body": "x"}, headers=other.headers)
        ).status_code == 404
        assert (await svc.client.delete(url, headers=other.headers)).status_code == 404
        assert (
            await svc.client.delete("/api/quick-replies/nope", headers=t.headers)
        ).status_code == 404
        bad = await svc.client.put(url, json={"shortcut": None}, headers=t.headers)
        assert bad.status_code == 422 and ["body", "shortcut"] in [list(x[:2]) for x in h.locs(bad)]
        assert (await svc.client.get("/api/quick-replies", headers=other.headers)).json() == {
            "items": []
        }

    async def test_crud_and_409_on_a_taken_shortcut(self, svc: Service) -> None:
        t, other = h.new_tenant(), h.new_tenant()
        resp = await svc.client.post(
            "/api/quick-replies",
            json={"shortcut": "saludo", "body": "¡Hola {{name}}! ¿En qué te ayudo?"},
            headers=t.headers,
        )
        assert resp.status_code == 201, resp.text
        saludo = resp.json()
        assert set(saludo) == {"id", "shortcut", "body", "created_at"}
        dup = await svc.client.post(
            "/api/quick-replies", json={"shortcut": "Saludo", "body": "otro"}, headers=t.headers
        )
        assert dup.status_code == 409
        assert dup.json()["error"]["code"] == "shortcut_taken"
        # another account may use the same shortcut
        mine = await svc.client.post(
            "/api/quick-replies", json={"shortcut": "saludo", "body": "hi"}, headers=other.headers
        )
        assert mine.status_code == 201

        precio = (
            await svc.client.post(
                "/api/quick-replies",
                json={"shortcut": "precio-2024_b", "body": "Precios adjuntos"},
                headers=t.headers,
            )
        ).json()
        taken = await svc.client.put(
            f"/api/quick-replies/{precio['id']}", json={"shortcut": "SALUDO"}, headers=t.headers
        )
        assert taken.status_code == 409
        updated = await svc.client.put(
            f"/api/quick-replies/{precio['id']}",
            json={"shortcut": "precios", "body": "Lista de precios"},
            headers=t.headers,
        )
        assert updated.status_code == 200
        assert (updated.json()["shortcut"], updated.json()["body"]) == (
            "precios",
            "Lista de precios",
        )

        listed = (await svc.client.get("/api/quick-replies", headers=t.headers)).json()["items"]
        assert [r["shortcut"] for r in listed] == ["precios", "saludo"]
        assert (
            await svc.client.delete(f"/api/quick-replies/{saludo['id']}", headers=t.headers)
        ).status_code == 204
        listed = (await svc.client.get("/api/quick-replies", headers=t.headers)).json()["items"]
        assert [r["shortcut"] for r in listed] == ["precios"]
        # the freed shortcut can be taken again
        again = await svc.client.post(
            "/api/quick-replies", json={"shortcut": "saludo", "body": "Hola"}, headers=t.headers
        )
        assert again.status_code == 201
