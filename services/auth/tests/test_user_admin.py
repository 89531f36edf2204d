"""What an admin does to the users of the account, password changes, session lifetime,
and the revocations announced to the gateways."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg

from clarin_auth.main import create_app
from clarin_auth.settings import AuthSettings
from clarin_devkit.testing import running_app
from clarin_devkit.testing.plugin import TestServers
from services.auth.tests.helpers import AuthApi, Revoked


async def _team(api: AuthApi) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """An admin, and an agent (Bob) with a session of his own."""
    admin = await api.register()
    created = await api.create_user(admin, "bob@example.com")
    assert created.status_code == 201
    agent = await api.login("bob@example.com")
    return admin, created.json(), agent


class TestUpdateUser:
    async def test_admin_renames_and_changes_the_role(self, api: AuthApi, revoked: Revoked) -> None:
        admin, bob, agent = await _team(api)
        resp = await api.client.patch(
            f"/api/users/{bob['id']}",
            json={"name": "  Robert ", "role": "admin"},
            headers=api.bearer(admin),
        )
        assert resp.status_code == 200, resp.text
        assert resp.json() == {**bob, "name": "Robert", "role": "admin"}
        # his access tokens end (they say agent); his session goes on with the new role
        event = await revoked.wait_for(bob["id"], "role_changed")
        assert event["session_ids"] is None
        refreshed = await api.refresh(agent["refresh_token"])
        assert refreshed.status_code == 200
        assert refreshed.json()["user"]["role"] == "admin"

    async def test_disabling_ends_every_session_and_login(
        self, api: AuthApi, revoked: Revoked, db: asyncpg.Connection
    ) -> None:
        admin, bob, agent = await _team(api)
        second = await api.login("bob@example.com")
        resp = await api.client.patch(
            f"/api/users/{bob['id']}", json={"disabled": True}, headers=api.bearer(admin)
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["disabled"] is True
        event = await revoked.wait_for(bob["id"], "disabled")
        assert event["session_ids"] is None
        for session in (agent, second):
            refused = await api.refresh(session["refresh_token"])
            assert api.error_code(refused, 401) == "invalid_refresh_token"
        login = await api.client.post(
            "/api/auth/login", json={"email": "bob@example.com", "password": api.password}
        )
        assert api.error_code(login, 403) == "user_disabled"
        # a wrong password still says only that
        wrong = await api.client.post(
            "/api/auth/login", json={"email": "bob@example.com", "password": "nope nope"}
        )
        assert api.error_code(wrong, 401) == "invalid_credentials"
        listed = await api.client.get("/api/users", headers=api.bearer(admin))
        assert {u["email"]: u["disabled"] for u in listed.json()["items"]} == {
            "alice@example.com": False,
            "bob@example.com": True,
        }
        # enabled again: he signs in
        again = await api.client.patch(
            f"/api/users/{bob['id']}", json={"disabled": False}, headers=api.bearer(admin)
        )
        assert again.json()["disabled"] is False
        await api.login("bob@example.com")
        live = await db.fetchval(
            "SELECT count(*) FROM auth.refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL",
            uuid.UUID(bob["id"]),
        )
        assert live == 1

    async def test_the_last_active_admin_stays(self, api: AuthApi) -> None:
        admin, bob, _ = await _team(api)
        me = admin["user"]["id"]
        demote = await api.client.patch(
            f"/api/users/{me}", json={"role": "agent"}, headers=api.bearer(admin)
        )
        assert api.error_code(demote, 409) == "last_admin"
        disable_self = await api.client.patch(
            f"/api/users/{me}", json={"disabled": True}, headers=api.bearer(admin)
        )
        assert api.error_code(disable_self, 409) == "cannot_remove_self"
        # with a second admin, stepping down is fine
        await api.client.patch(
            f"/api/users/{bob['id']}", json={"role": "admin"}, headers=api.bearer(admin)
        )
        demote = await api.client.patch(
            f"/api/users/{me}", json={"role": "agent"}, headers=api.bearer(admin)
        )
        assert demote.status_code == 200
        assert demote.json()["role"] == "agent"

    async def test_agent_is_forbidden(self, api: AuthApi) -> None:
        admin, bob, agent = await _team(api)
        for body in ({"role": "admin"}, {"disabled": True}, {}):
            resp = await api.client.patch(
                f"/api/users/{admin['user']['id']}", json=body, headers=api.bearer(agent)
            )
            assert api.error_code(resp, 403) == "forbidden"
        own = await api.client.patch(
            f"/api/users/{bob['id']}", json={"role": "admin"}, headers=api.bearer(agent)
        )
        assert api.error_code(own, 403) == "forbidden"

    async def test_another_accounts_user_is_not_found(self, api: AuthApi) -> None:
        _, bob, _ = await _team(api)
        other = await api.register("hank@globex.example", account_name="Globex")
        for user_id in (bob["id"], str(uuid.uuid4()), "not-a-uuid"):
            resp = await api.client.patch(
                f"/api/users/{user_id}", json={"disabled": True}, headers=api.bearer(other)
            )
            assert api.error_code(resp, 404) == "user_not_found"
        # untouched
        await api.login("bob@example.com")

    async def test_missing_token_and_bad_input(self, api: AuthApi) -> None:
        admin, bob, _ = await _team(api)
        resp = await api.client.patch(f"/api/users/{bob['id']}", json={"disabled": True})
        assert api.error_code(resp, 401) == "unauthorized"
        for body, field in (
            ({"role": "owner"}, "role"),
            ({"disabled": "maybe"}, "disabled"),
            ({"name": " "}, "name"),
        ):
            resp = await api.client.patch(
                f"/api/users/{bob['id']}", json=body, headers=api.bearer(admin)
            )
            assert api.error_locs(resp) == [["body", field]]


class TestDeleteUser:
    async def test_admin_removes_a_user(self, api: AuthApi, revoked: Revoked) -> None:
        admin, bob, agent = await _team(api)
        resp = await api.client.delete(f"/api/users/{bob['id']}", headers=api.bearer(admin))
        assert resp.status_code == 204
        await revoked.wait_for(bob["id"], "removed")
        refused = await api.refresh(agent["refresh_token"])
        assert api.error_code(refused, 401) == "invalid_refresh_token"
        listed = await api.client.get("/api/users", headers=api.bearer(admin))
        assert [u["id"] for u in listed.json()["items"]] == [admin["user"]["id"]]
        again = await api.client.delete(f"/api/users/{bob['id']}", headers=api.bearer(admin))
        assert api.error_code(again, 404) == "user_not_found"

    async def test_not_oneself(self, api: AuthApi) -> None:
        admin, _, _ = await _team(api)
        resp = await api.client.delete(
            f"/api/users/{admin['user']['id']}", headers=api.bearer(admin)
        )
        assert api.error_code(resp, 409) == "cannot_remove_self"

    async def test_not_the_last_active_admin(self, api: AuthApi) -> None:
        admin, bob, _ = await _team(api)
        await api.client.patch(
            f"/api/users/{bob['id']}", json={"role": "admin"}, headers=api.bearer(admin)
        )
        bob_admin = await api.login("bob@example.com")
        # Alice disabled: Bob is the only active admin, and cannot remove... himself
        await api.client.patch(
            f"/api/users/{admin['user']['id']}",
            json={"disabled": True},
            headers=api.bearer(bob_admin),
        )
        resp = await api.client.delete(f"/api/users/{bob['id']}", headers=api.bearer(bob_admin))
        assert api.error_code(resp, 409) == "cannot_remove_self"
        # removing the disabled admin is fine: Bob stays
        ok = await api.client.delete(
            f"/api/users/{admin['user']['id']}", headers=api.bearer(bob_admin)
        )
        assert ok.status_code == 204

    async def test_agent_forbidden_other_account_not_found(self, api: AuthApi) -> None:
        admin, bob, agent = await _team(api)
        resp = await api.client.delete(
            f"/api/users/{admin['user']['id']}", headers=api.bearer(agent)
        )
        assert api.error_code(resp, 403) == "forbidden"
        other = await api.register("hank@globex.example", account_name="Globex")
        resp = await api.client.delete(f"/api/users/{bob['id']}", headers=api.bearer(other))
        assert api.error_code(resp, 404) == "user_not_found"
        anon = await api.client.delete(f"/api/users/{bob['id']}")
        assert api.error_code(anon, 401) == "unauthorized"


class TestChangePassword:
    async def test_changes_it_and_ends_every_other_session(
        self, api: AuthApi, revoked: Revoked
    ) -> None:
        _, bob, agent = await _team(api)
        other = await api.login("bob@example.com")
        resp = await api.client.post(
            "/api/auth/password",
            json={"current_password": api.password, "new_password": "a brand new one"},
            headers=api.bearer(agent),
        )
        assert resp.status_code == 204, resp.text
        event = await revoked.wait_for(bob["id"], "password_changed")
        other_family = event["session_ids"]
        assert other_family is not None and len(other_family) == 1
        # the other session is over, this one goes on
        ended = await api.refresh(other["refresh_token"])
        assert api.error_code(ended, 401) == "invalid_refresh_token"
        assert (await api.refresh(agent["refresh_token"])).status_code == 200
        assert (
            await api.client.post(
                "/api/auth/login", json={"email": "bob@example.com", "password": api.password}
            )
        ).status_code == 401
        await api.login("bob@example.com", "a brand new one")

    async def test_wrong_current_password_names_the_field(self, api: AuthApi) -> None:
        _, _, agent = await _team(api)
        resp = await api.client.post(
            "/api/auth/password",
            json={"current_password": "not it at all", "new_password": "a brand new one"},
            headers=api.bearer(agent),
        )
        assert resp.status_code == 422
        assert resp.json()["error"]["code"] == "wrong_password"
        assert resp.json()["error"]["details"][0]["loc"] == ["body", "current_password"]
        short = await api.client.post(
            "/api/auth/password",
            json={"current_password": api.password, "new_password": "short"},
            headers=api.bearer(agent),
        )
        assert api.error_locs(short) == [["body", "new_password"]]
        anon = await api.client.post(
            "/api/auth/password",
            json={"current_password": api.password, "new_password": "a brand new one"},
        )
        assert api.error_code(anon, 401) == "unauthorized"
        await api.login("bob@example.com")


async def test_logout_and_reuse_are_announced(api: AuthApi, revoked: Revoked) -> None:
    admin = await api.register()
    out = await api.client.post("/api/auth/logout", json={"refresh_token": admin["refresh_token"]})
    assert out.status_code == 204
    event = await revoked.wait_for(admin["user"]["id"], "logout")
    session = await api.login()
    await api.refresh(session["refresh_token"])
    await api.refresh(session["refresh_token"])  # reused
    reused = await revoked.wait_for(admin["user"]["id"], "refresh_reused")
    assert event["session_ids"] != reused["session_ids"]


async def test_access_tokens_name_their_session(api: AuthApi) -> None:
    import jwt

    session = await api.register()
    claims = jwt.decode(session["access_token"], options={"verify_signature": False})
    refreshed = (await api.refresh(session["refresh_token"])).json()
    again = jwt.decode(refreshed["access_token"], options={"verify_signature": False})
    assert claims["sid"] == again["sid"]
    other = jwt.decode((await api.login())["access_token"], options={"verify_signature": False})
    assert other["sid"] != claims["sid"]


async def test_a_session_ends_at_its_absolute_lifetime(
    test_servers: TestServers, clean_state: None, db: asyncpg.Connection
) -> None:
    settings = AuthSettings(
        bcrypt_rounds=4, refresh_token_ttl_seconds=3600, session_max_age_seconds=60
    )
    async with running_app(create_app(settings)) as client:
        reg = await client.post(
            "/api/auth/register",
            json={
                "account_name": "Acme",
                "name": "Alice",
                "email": "alice@example.com",
                "password": "correct horse battery",
            },
        )
        session = reg.json()
        rows = await db.fetch(
            "SELECT expires_at, family_expires_at, created_at FROM auth.refresh_tokens"
        )
        assert rows[0]["expires_at"] == rows[0]["family_expires_at"]
        assert rows[0]["family_expires_at"] - rows[0]["created_at"] < timedelta(seconds=61)
        # refreshing does not push the end further
        for _ in range(3):
            resp = await client.post(
                "/api/auth/refresh", json={"refresh_token": session["refresh_token"]}
            )
            assert resp.status_code == 200
            session = resp.json()
        ends = await db.fetch("SELECT DISTINCT family_expires_at FROM auth.refresh_tokens")
        assert len(ends) == 1
        latest = await db.fetchval("SELECT max(expires_at) FROM auth.refresh_tokens")
        assert latest == ends[0]["family_expires_at"]
        # a minute later (the clock moved by moving the rows back): the session is over
        await db.execute(
            "UPDATE auth.refresh_tokens SET expires_at = expires_at - interval '61 seconds',"
            " family_expires_at = family_expires_at - interval '61 seconds',"
            " created_at = created_at - interval '61 seconds'"
        )
        over = await client.post(
            "/api/auth/refresh", json={"refresh_token": session["refresh_token"]}
        )
        assert over.status_code == 401
        assert over.json()["error"]["code"] == "invalid_refresh_token"
