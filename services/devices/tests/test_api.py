"""The devices API without a worker: validation, isolation, desired state, events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx
import pytest

from clarin_common.app import service_context
from clarin_common.outbox import PendingEvent
from clarin_devices.deps import DevicesContext
from clarin_devices.main import create_app
from clarin_devices.settings import DevicesSettings
from clarin_devkit.testing import auth_headers, make_token, running_app
from clarin_devkit.testing.plugin import TestServers
from services.devices.tests.helpers import Api, EventLog

UNKNOWN = str(uuid.uuid4())


def error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert set(body) == {"code", "message", "details"}
    return dict(body)


def locs(resp: httpx.Response) -> list[list[Any]]:
    return [d["loc"] for d in error(resp, 422)["details"]]


class TestCreate:
    async def test_creates_a_disconnected_device(self, api: Api, events: EventLog) -> None:
        resp = await api.client.post(
            "/api/devices", json={"name": "  Sales line "}, headers=api.headers
        )
        assert resp.status_code == 201, resp.text
        device = resp.json()
        assert device == {
            "id": device["id"],
            "account_id": api.account_id,
            "name": "Sales line",
            "phone": None,
            "jid": None,
            "status": "disconnected",
            "last_error": None,
            "last_seen_at": None,
            "created_at": device["created_at"],
        }
        uuid.UUID(device["id"])
        assert device["created_at"].endswith(("Z", "+00:00"))

    async def test_requires_a_token(self, api: Api) -> None:
        resp = await api.client.post("/api/devices", json={"name": "x"})
        assert error(resp, 401)["code"] == "unauthorized"

    async def test_name_is_required_and_not_blank(self, api: Api) -> None:
        for body in ({}, {"name": "   "}, {"name": "x" * 101}, {"name": 5}):
            resp = await api.client.post("/api/devices", json=body, headers=api.headers)
            assert ["body", "name"] in locs(resp), body


class TestList:
    async def test_lists_only_the_callers_devices(self, api: Api, other_api: Api) -> None:
        first = await api.create("One")
        second = await api.create("Two")
        await other_api.create("Theirs")
        resp = await api.client.get("/api/devices", headers=api.headers)
        assert resp.status_code == 200
        assert resp.json() == {"items": [first, second]}

    async def test_requires_a_token(self, api: Api) -> None:
        assert error(await api.client.get("/api/devices"), 401)["code"] == "unauthorized"


class TestGet:
    async def test_gets_a_device(self, api: Api) -> None:
        device = await api.create()
        assert await api.get(device["id"]) == device

    async def test_another_accounts_device_is_not_found(self, api: Api, other_api: Api) -> None:
        device = await api.create()
        resp = await other_api.client.get(f"/api/devices/{device['id']}", headers=other_api.headers)
        assert error(resp, 404)["code"] == "device_not_found"

    async def test_unknown_and_malformed_ids_are_not_found(self, api: Api) -> None:
        for device_id in (UNKNOWN, "not-a-uuid"):
            resp = await api.client.get(f"/api/devices/{device_id}", headers=api.headers)
            error(resp, 404)

    async def test_requires_a_token(self, api: Api) -> None:
        device = await api.create()
        error(await api.client.get(f"/api/devices/{device['id']}"), 401)


ACTIONS = ("connect", "disconnect", "logout")


class TestLifecycleActions:
    async def test_connect_stores_the_wish_and_says_connecting(
        self, api: Api, events: EventLog, db: asyncpg.Pool
    ) -> None:
        device = await api.create()
        resp = await api.post(device["id"], "connect")
        assert resp.status_code == 202, resp.text
        assert resp.json() == {**device, "status": "connecting"}
        row = await db.fetchrow(
            "SELECT desired_state FROM devices WHERE id = $1", uuid.UUID(device["id"])
        )
        assert row is not None and row["desired_state"] == "connected"
        await events.wait(lambda: events.app_statuses(device["id"]) == ["connecting"])
        wa = events.of(".status", device["id"])
        assert [w.subject for w in wa] == [f"wa.evt.{api.account_id}.{device['id']}.status"]
        assert wa[0].headers["Nats-Msg-Id"] == wa[0].data["id"]
        app = events.of(".device_status", device["id"])[0]
        assert app.subject == f"app.{api.account_id}.device_status"
        assert app.data["data"]["device"] == resp.json()
        assert app.headers["Nats-Msg-Id"] == app.data["id"]

        again = await api.post(device["id"], "connect")
        assert again.status_code == 202 and again.json()["status"] == "connecting"
        # nothing changed, so nothing was announced: the next change follows the first
        await api.post(device["id"], "disconnect")
        await events.wait(lambda: events.app_statuses(device["id"])[1:])
        assert events.app_statuses(device["id"]) == ["connecting", "disconnected"]
        assert events.statuses(device["id"]) == ["connecting", "disconnected"]

    async def test_disconnect_and_logout(
        self, api: Api, events: EventLog, db: asyncpg.Pool
    ) -> None:
        device = await api.create()
        await api.post(device["id"], "connect")
        resp = await api.post(device["id"], "disconnect")
        assert resp.status_code == 202
        assert resp.json()["status"] == "disconnected"
        resp = await api.post(device["id"], "logout")
        assert resp.status_code == 202
        assert resp.json()["status"] == "logged_out"
        assert resp.json()["jid"] is None
        row = await db.fetchrow(
            "SELECT desired_state FROM devices WHERE id = $1", uuid.UUID(device["id"])
        )
        assert row is not None and row["desired_state"] == "logged_out"
        await events.wait(
            lambda: (
                events.app_statuses(device["id"]) == ["connecting", "disconnected", "logged_out"]
            )
        )
        # a logged-out device connects again (with a new QR)
        resp = await api.post(device["id"], "connect")
        assert resp.json()["status"] == "connecting"

    async def test_require_a_token(self, api: Api) -> None:
        device = await api.create()
        for action in ACTIONS:
            error(await api.client.post(f"/api/devices/{device['id']}/{action}"), 401)

    async def test_another_accounts_device_is_not_found(self, api: Api, other_api: Api) -> None:
        device = await api.create()
        for action in ACTIONS:
            error(await other_api.post(device["id"], action), 404)
        assert (await api.get(device["id"]))["status"] == "disconnected"


class TestQr:
    async def test_no_qr_pending_is_404(self, api: Api) -> None:
        device = await api.create()
        resp = await api.client.get(f"/api/devices/{device['id']}/qr", headers=api.headers)
        assert error(resp, 404)["code"] == "qr_not_pending"

    async def test_another_accounts_device_is_not_found(self, api: Api, other_api: Api) -> None:
        device = await api.create()
        resp = await other_api.client.get(
            f"/api/devices/{device['id']}/qr", headers=other_api.headers
        )
        assert error(resp, 404)["code"] == "device_not_found"

    async def test_requires_a_token(self, api: Api) -> None:
        device = await api.create()
        error(await api.client.get(f"/api/devices/{device['id']}/qr"), 401)


class TestPairPhone:
    async def test_without_a_live_session_answers_409(self, api: Api) -> None:
        # no worker subscribed: "no responders", not a wait for the command timeout (503)
        device = await api.create()
        resp = await api.post(device["id"], "pair-phone", json={"phone": "+52 1 55 1234 5678"})
        body = error(resp, 409)
        assert body["code"] == "device_not_connected"
        assert body["details"] == {"device_id": device["id"]}

    async def test_phone_is_validated(self, api: Api) -> None:
        device = await api.create()
        for body in ({}, {"phone": "12345"}, {"phone": "call me"}, {"phone": "1" * 16}):
            resp = await api.post(device["id"], "pair-phone", json=body)
            assert ["body", "phone"] in locs(resp), body

    async def test_another_accounts_device_is_not_found(self, api: Api, other_api: Api) -> None:
        device = await api.create()
        resp = await other_api.post(device["id"], "pair-phone", json={"phone": "5215512345678"})
        error(resp, 404)

    async def test_requires_a_token(self, api: Api) -> None:
        device = await api.create()
        resp = await api.client.post(
            f"/api/devices/{device['id']}/pair-phone", json={"phone": "5215512345678"}
        )
        error(resp, 401)


class TestDelete:
    async def test_deletes(self, api: Api) -> None:
        device = await api.create()
        resp = await api.client.delete(f"/api/devices/{device['id']}", headers=api.headers)
        assert resp.status_code == 204
        assert resp.content == b""
        resp = await api.client.get(f"/api/devices/{device['id']}", headers=api.headers)
        error(resp, 404)
        resp = await api.client.delete(f"/api/devices/{device['id']}", headers=api.headers)
        error(resp, 404)

    async def test_another_accounts_device_is_not_found(self, api: Api, other_api: Api) -> None:
        device = await api.create()
        resp = await other_api.client.delete(
            f"/api/devices/{device['id']}", headers=other_api.headers
        )
        error(resp, 404)
        assert await api.get(device["id"])

    async def test_requires_a_token(self, api: Api) -> None:
        device = await api.create()
        error(await api.client.delete(f"/api/devices/{device['id']}"), 401)


class TestRoles:
    """API.md "Roles": linking and unlinking numbers is for admins."""

    async def test_agent_cannot_create_pair_logout_or_delete(self, api: Api) -> None:
        device = await api.create()
        agent = auth_headers(make_token(account_id=api.account_id, role="agent"))
        create = await api.client.post("/api/devices", json={"name": "x"}, headers=agent)
        assert error(create, 403)["code"] == "forbidden"
        # refused before the body is looked at: an agent learns nothing from a 422
        assert error(await api.client.post("/api/devices", json={}, headers=agent), 403)
        for method, path, body in (
            ("POST", f"/api/devices/{device['id']}/pair-phone", {"phone": "34600111222"}),
            ("POST", f"/api/devices/{device['id']}/logout", None),
            ("DELETE", f"/api/devices/{device['id']}", None),
        ):
            resp = await api.client.request(method, path, json=body, headers=agent)
            assert error(resp, 403)["code"] == "forbidden", path
        # untouched
        assert await api.get(device["id"]) == device

    async def test_agent_sees_and_connects_existing_devices(self, api: Api) -> None:
        device = await api.create()
        agent = auth_headers(make_token(account_id=api.account_id, role="agent"))
        listed = await api.client.get("/api/devices", headers=agent)
        assert listed.json() == {"items": [device]}
        got = await api.client.get(f"/api/devices/{device['id']}", headers=agent)
        assert got.status_code == 200
        connect = await api.client.post(f"/api/devices/{device['id']}/connect", headers=agent)
        assert connect.status_code == 202, connect.text
        disconnect = await api.client.post(f"/api/devices/{device['id']}/disconnect", headers=agent)
        assert disconnect.status_code == 202, disconnect.text


class TestStatusEventsAfterCommit:
    async def test_a_change_whose_publish_failed_is_relayed(
        self,
        test_servers: TestServers,
        events: EventLog,
        db: asyncpg.Pool,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        app = create_app(DevicesSettings(outbox_relay_interval=3600, db_pool_max=2))
        async with running_app(app) as client:
            api = Api(client)
            outbox = service_context(app, DevicesContext).outbox
            device = await api.create()

            async def nats_unreachable(_: Sequence[PendingEvent]) -> None:
                return None  # what Outbox.publish does when NATS is down after commit

            with monkeypatch.context() as patch:
                patch.setattr(outbox, "publish", nats_unreachable)
                resp = await api.post(device["id"], "connect")
            assert resp.status_code == 202  # committed: the answer stands
            assert await db.fetchval("SELECT count(*) FROM outbox") == 2  # wa + app events
            assert await outbox.relay_once(grace=0) == 2
            await events.wait(lambda: events.app_statuses(device["id"]))
            assert events.app_statuses(device["id"]) == ["connecting"]
            assert events.statuses(device["id"]) == ["connecting"]
            assert await db.fetchval("SELECT count(*) FROM outbox") == 0
