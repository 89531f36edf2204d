"""GET and POST /api/users."""

from __future__ import annotations

from typing import Any

import pytest

from clarin_devkit.testing import make_token
from services.auth.tests.helpers import AuthApi


class TestListUsers:
    async def test_lists_only_the_callers_account(self, api: AuthApi) -> None:
        acme = await api.register("alice@acme.example", account_name="Acme")
        globex = await api.register("hank@globex.example", account_name="Globex", name="Hank")
        bob = (await api.create_user(acme, "bob@acme.example", name="Bob")).json()

        resp = await api.client.get("/api/users", headers=api.bearer(acme))
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"items": [acme["user"], bob]}

        resp = await api.client.get("/api/users", headers=api.bearer(globex))
        assert resp.json() == {"items": [globex["user"]]}

    async def test_agents_may_list(self, api: AuthApi) -> None:
        admin = await api.register()
        await api.create_user(admin, "bob@example.com")
        agent = await api.login("bob@example.com")
        resp = await api.client.get("/api/users", headers=api.bearer(agent))
        assert resp.status_code == 200
        assert [u["email"] for u in resp.json()["items"]] == [
            "alice@example.com",
            "bob@example.com",
        ]

    async def test_missing_token(self, api: AuthApi) -> None:
        resp = await api.client.get("/api/users")
        assert api.error_code(resp, 401) == "unauthorized"

    async def test_token_of_another_account_sees_nothing_of_this_one(self, api: AuthApi) -> None:
        await api.register()
        resp = await api.client.get("/api/users", headers=api.bearer(make_token()))
        assert resp.status_code == 200
        assert resp.json() == {"items": []}


class TestCreateUser:
    async def test_admin_creates_an_agent_who_can_sign_in(self, api: AuthApi) -> None:
        admin = await api.register()
        resp = await api.create_user(admin, "  Bob@Example.com ", name=" Bob ", role="agent")
        assert resp.status_code == 201, resp.text
        user = resp.json()
        assert user == {
            "id": user["id"],
            "account_id": admin["account"]["id"],
            "email": "bob@example.com",
            "name": "Bob",
            "role": "agent",
            "disabled": False,
        }
        session = await api.login("BOB@example.com")
        assert session["user"] == user
        assert session["account"] == admin["account"]

    async def test_admin_creates_an_admin(self, api: AuthApi) -> None:
        admin = await api.register()
        resp = await api.create_user(admin, "carol@example.com", role="admin")
        assert resp.status_code == 201
        carol = await api.login("carol@example.com")
        assert (await api.create_user(carol, "dave@example.com")).status_code == 201

    async def test_agent_is_forbidden(self, api: AuthApi) -> None:
        admin = await api.register()
        await api.create_user(admin, "bob@example.com")
        agent = await api.login("bob@example.com")
        resp = await api.create_user(agent, "eve@example.com")
        assert api.error_code(resp, 403) == "forbidden"
        users = await api.client.get("/api/users", headers=api.bearer(admin))
        assert len(users.json()["items"]) == 2

    async def test_missing_token(self, api: AuthApi) -> None:
        resp = await api.client.post(
            "/api/users",
            json={
                "name": "Bob",
                "email": "bob@example.com",
                "password": api.password,
                "role": "agent",
            },
        )
        assert api.error_code(resp, 401) == "unauthorized"

    @pytest.mark.parametrize(
        "email", ["alice@example.com", " ALICE@example.COM", "hank@globex.example"]
    )
    async def test_duplicate_email_conflicts_across_accounts(
        self, api: AuthApi, email: str
    ) -> None:
        admin = await api.register("alice@example.com")
        await api.register("hank@globex.example", account_name="Globex")
        resp = await api.create_user(admin, email)
        assert api.error_code(resp, 409) == "email_taken"
        assert resp.json()["error"]["message"] == "This email is already registered"

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"password": "1234567"}, "password"),
            ({"password": "p" * 129}, "password"),
            ({"email": "bob at example.com"}, "email"),
            ({"role": "owner"}, "role"),
            ({"role": None}, "role"),
            ({"name": None}, "name"),
            ({"name": " "}, "name"),
            ({"email": None}, "email"),
        ],
    )
    async def test_validation_names_the_field(
        self, api: AuthApi, change: dict[str, Any], field: str
    ) -> None:
        admin = await api.register()
        body = {
            "name": "Bob",
            "email": "bob@example.com",
            "password": api.password,
            "role": "agent",
        }
        body.update(change)
        body = {k: v for k, v in body.items() if v is not None}
        resp = await api.client.post("/api/users", json=body, headers=api.bearer(admin))
        assert api.error_locs(resp) == [["body", field]]
