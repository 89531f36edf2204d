"""POST /api/auth/register, /login, /refresh, /logout and GET /api/auth/me."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import asyncpg
import jwt
import pytest

import clarin_auth.security
from clarin_auth.deps import AuthContext
from clarin_auth.main import create_app
from clarin_auth.settings import AuthSettings
from clarin_common.app import service_context
from clarin_common.auth import TokenVerifier, generate_key_pair, issue_access_token
from clarin_common.settings import DEV_JWT_PUBLIC_KEY
from clarin_devkit.testing import make_token, running_app
from clarin_devkit.testing.plugin import TestServers
from services.auth.tests.helpers import PASSWORD, AuthApi

SESSION_KEYS = {"access_token", "refresh_token", "token_type", "expires_in", "user", "account"}


class TestRegister:
    async def test_creates_account_and_admin(self, api: AuthApi, db: asyncpg.Connection) -> None:
        session = await api.register(" Alice@Example.COM ", account_name="  Acme  ", name=" Alice ")
        assert set(session) == SESSION_KEYS
        assert session["token_type"] == "bearer"
        assert session["expires_in"] == 900
        assert session["account"]["name"] == "Acme"
        assert session["user"] == {
            "id": session["user"]["id"],
            "account_id": session["account"]["id"],
            "email": "alice@example.com",
            "name": "Alice",
            "role": "admin",
            "disabled": False,
        }
        row = await db.fetchrow("SELECT password_hash FROM auth.users")
        assert row is not None and api.password not in row["password_hash"]
        assert row["password_hash"].startswith("$2b$04$")
        # only the SHA-256 of the refresh token is stored
        stored = await db.fetchval("SELECT token_hash FROM auth.refresh_tokens")
        assert stored == clarin_auth.security.hash_refresh_token(session["refresh_token"])
        assert session["refresh_token"] not in stored

    async def test_duplicate_email_conflicts_and_creates_nothing(
        self, api: AuthApi, db: asyncpg.Connection
    ) -> None:
        await api.register("alice@example.com")
        resp = await api.client.post(
            "/api/auth/register",
            json={
                "account_name": "Other",
                "name": "Alice 2",
                "email": "  ALICE@example.com",
                "password": api.password,
            },
        )
        assert api.error_code(resp, 409) == "email_taken"
        assert await db.fetchval("SELECT count(*) FROM auth.accounts") == 1
        assert await db.fetchval("SELECT count(*) FROM auth.users") == 1

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"password": "short7!"}, "password"),
            ({"password": "x" * 129}, "password"),
            ({"email": "not-an-email"}, "email"),
            ({"email": "alice@"}, "email"),
            ({"name": "   "}, "name"),
            ({"account_name": ""}, "account_name"),
            ({"account_name": "a" * 201}, "account_name"),
            ({"account_name": None}, "account_name"),
        ],
    )
    async def test_validation_names_the_field(
        self, api: AuthApi, change: dict[str, Any], field: str
    ) -> None:
        body = {"account_name": "Acme", "name": "Alice", "email": "a@example.com"}
        body["password"] = api.password
        body.update(change)
        body = {k: v for k, v in body.items() if v is not None}
        resp = await api.client.post("/api/auth/register", json=body)
        assert api.error_locs(resp) == [["body", field]]

    async def test_128_character_password_is_accepted_and_every_character_counts(
        self, api: AuthApi
    ) -> None:
        long_password = "é" * 127 + "a"  # 256 bytes of UTF-8: past bcrypt's 72
        await api.register(password=long_password)
        await api.login(password=long_password)
        resp = await api.client.post(
            "/api/auth/login",
            json={"email": "alice@example.com", "password": "é" * 127 + "b"},
        )
        assert api.error_code(resp, 401) == "invalid_credentials"


class TestLogin:
    async def test_normalises_the_email(self, api: AuthApi) -> None:
        registered = await api.register("alice@example.com")
        session = await api.login(" Alice@Example.COM ")
        assert set(session) == SESSION_KEYS
        assert session["user"] == registered["user"]
        assert session["account"] == registered["account"]
        assert session["refresh_token"] != registered["refresh_token"]

    async def test_wrong_password_and_unknown_email_answer_alike(self, api: AuthApi) -> None:
        await api.register()
        wrong = await api.client.post(
            "/api/auth/login", json={"email": "alice@example.com", "password": "wrong password"}
        )
        unknown = await api.client.post(
            "/api/auth/login", json={"email": "nobody@example.com", "password": api.password}
        )
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json() == unknown.json()
        assert wrong.json()["error"]["code"] == "invalid_credentials"

    async def test_unknown_email_still_runs_bcrypt(
        self, test_servers: TestServers, clean_state: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        app = create_app(AuthSettings(bcrypt_rounds=4))
        async with running_app(app) as client:
            passwords = service_context(app, AuthContext).passwords
            checked: list[str] = []
            original = passwords.check

            def spy(password: str, password_hash: str) -> bool:
                checked.append(password_hash)
                return original(password, password_hash)

            monkeypatch.setattr(passwords, "check", spy)
            resp = await client.post(
                "/api/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}
            )
        assert AuthApi.error_code(resp, 401) == "invalid_credentials"
        assert checked == [passwords.dummy_hash]
        assert passwords.dummy_hash.startswith("$2b$04$")

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"email": "alice@example.com"}, "password"),
            ({"password": "whatever1"}, "email"),
            ({"email": "nope", "password": "whatever1"}, "email"),
            ({"email": "alice@example.com", "password": ""}, "password"),
        ],
    )
    async def test_validation_names_the_field(
        self, api: AuthApi, body: dict[str, Any], field: str
    ) -> None:
        resp = await api.client.post("/api/auth/login", json=body)
        assert api.error_locs(resp) == [["body", field]]


class TestAccessToken:
    async def test_verifies_with_the_common_verifier_and_carries_the_claims(
        self, api: AuthApi
    ) -> None:
        session = await api.register()
        principal = TokenVerifier(DEV_JWT_PUBLIC_KEY).verify(session["access_token"])
        assert principal.user_id == session["user"]["id"]
        assert principal.account_id == session["account"]["id"]
        assert principal.role == "admin"
        claims = jwt.decode(session["access_token"], options={"verify_signature": False})
        assert {"sub", "account_id", "role", "exp", "iat", "jti"} <= set(claims)
        assert claims["exp"] - claims["iat"] == 900
        assert jwt.get_unverified_header(session["access_token"])["alg"] == "EdDSA"
        again = await api.login()
        assert (
            jwt.decode(again["access_token"], options={"verify_signature": False})["jti"]
            != claims["jti"]
        )


class TestRefresh:
    async def test_rotates(self, api: AuthApi) -> None:
        first = await api.register()
        resp = await api.refresh(first["refresh_token"])
        assert resp.status_code == 200, resp.text
        second = resp.json()
        assert set(second) == SESSION_KEYS
        assert second["refresh_token"] != first["refresh_token"]
        assert second["user"] == first["user"] and second["account"] == first["account"]
        me = await api.client.get("/api/auth/me", headers=api.bearer(second))
        assert me.status_code == 200
        third = await api.refresh(second["refresh_token"])
        assert third.status_code == 200, third.text

    async def test_reuse_revokes_the_whole_family(self, api: AuthApi) -> None:
        first = await api.register()
        other_device = await api.login()  # a second family of the same user
        second = (await api.refresh(first["refresh_token"])).json()
        third = (await api.refresh(second["refresh_token"])).json()

        reused = await api.refresh(first["refresh_token"])
        assert api.error_code(reused, 401) == "refresh_token_reused"
        # even the newest token of the family is dead now
        newest = await api.refresh(third["refresh_token"])
        assert api.error_code(newest, 401) == "invalid_refresh_token"
        # and presenting the spent ones again stays refused
        assert (await api.refresh(second["refresh_token"])).status_code == 401
        # the other family is untouched
        assert (await api.refresh(other_device["refresh_token"])).status_code == 200

    async def test_concurrent_refreshes_of_one_token_have_one_winner(self, api: AuthApi) -> None:
        session = await api.register()
        answers = await asyncio.gather(*(api.refresh(session["refresh_token"]) for _ in range(6)))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200, 401, 401, 401, 401, 401], [r.text for r in answers]
        # The losers presented a spent token: that is reuse, so the family, the
        # winner's new token included, is revoked.
        winner = next(r.json() for r in answers if r.status_code == 200)
        assert (await api.refresh(winner["refresh_token"])).status_code == 401

    async def test_expired_token_is_refused(self, api: AuthApi, db: asyncpg.Connection) -> None:
        session = await api.register()
        await db.execute("UPDATE auth.refresh_tokens SET expires_at = now() - interval '1 second'")
        resp = await api.refresh(session["refresh_token"])
        assert api.error_code(resp, 401) == "invalid_refresh_token"

    async def test_unknown_token_is_refused(self, api: AuthApi) -> None:
        await api.register()
        resp = await api.refresh("not-a-token-we-issued")
        assert api.error_code(resp, 401) == "invalid_refresh_token"

    async def test_access_token_is_not_a_refresh_token(self, api: AuthApi) -> None:
        session = await api.register()
        resp = await api.refresh(session["access_token"])
        assert resp.status_code == 401

    async def test_role_changes_reach_the_next_access_token(
        self, api: AuthApi, db: asyncpg.Connection
    ) -> None:
        session = await api.register()
        await db.execute("UPDATE auth.users SET role = 'agent'")
        refreshed = (await api.refresh(session["refresh_token"])).json()
        assert refreshed["user"]["role"] == "agent"
        assert TokenVerifier(DEV_JWT_PUBLIC_KEY).verify(refreshed["access_token"]).role == "agent"

    @pytest.mark.parametrize("body", [{}, {"refresh_token": ""}, {"refresh_token": 5}])
    async def test_validation_names_the_field(self, api: AuthApi, body: dict[str, Any]) -> None:
        resp = await api.client.post("/api/auth/refresh", json=body)
        assert api.error_locs(resp) == [["body", "refresh_token"]]


class TestLogout:
    async def test_revokes_the_family(self, api: AuthApi) -> None:
        first = await api.register()
        elsewhere = await api.login()
        second = (await api.refresh(first["refresh_token"])).json()
        resp = await api.client.post(
            "/api/auth/logout", json={"refresh_token": second["refresh_token"]}
        )
        assert resp.status_code == 204
        assert resp.content == b""
        assert (await api.refresh(second["refresh_token"])).status_code == 401
        assert (await api.refresh(first["refresh_token"])).status_code == 401
        # signing out one session leaves the user's other sessions alone
        assert (await api.refresh(elsewhere["refresh_token"])).status_code == 200

    async def test_logout_racing_a_refresh_leaves_no_live_token(self, api: AuthApi) -> None:
        await api.register()
        for _ in range(10):
            session = await api.login()
            refreshed, logout = await asyncio.gather(
                api.refresh(session["refresh_token"]),
                api.client.post(
                    "/api/auth/logout", json={"refresh_token": session["refresh_token"]}
                ),
            )
            assert logout.status_code == 204
            if refreshed.status_code == 200:
                # the token minted by the refresh belongs to the family logout revoked
                again = await api.refresh(refreshed.json()["refresh_token"])
                assert again.status_code == 401

    async def test_unknown_or_repeated_logout_is_fine(self, api: AuthApi) -> None:
        session = await api.register()
        for token in ("never-issued", session["refresh_token"], session["refresh_token"]):
            resp = await api.client.post("/api/auth/logout", json={"refresh_token": token})
            assert resp.status_code == 204

    async def test_validation_names_the_field(self, api: AuthApi) -> None:
        resp = await api.client.post("/api/auth/logout", json={})
        assert api.error_locs(resp) == [["body", "refresh_token"]]


def _foreign_private_key() -> str:
    return generate_key_pair()[0]


class TestMe:
    async def test_returns_user_and_account(self, api: AuthApi) -> None:
        session = await api.register()
        resp = await api.client.get("/api/auth/me", headers=api.bearer(session))
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"user": session["user"], "account": session["account"]}

    async def test_missing_token(self, api: AuthApi) -> None:
        resp = await api.client.get("/api/auth/me")
        assert api.error_code(resp, 401) == "unauthorized"

    async def test_expired_token(self, api: AuthApi) -> None:
        session = await api.register()
        expired = make_token(
            account_id=session["account"]["id"],
            user_id=session["user"]["id"],
            ttl=timedelta(seconds=-60),
        )
        resp = await api.client.get("/api/auth/me", headers=api.bearer(expired))
        assert api.error_code(resp, 401) == "token_expired"

    async def test_tampered_token(self, api: AuthApi) -> None:
        session = await api.register()
        header, _payload, signature = session["access_token"].split(".")
        forged = jwt.decode(session["access_token"], options={"verify_signature": False})
        forged["role"] = "admin"
        forged["account_id"] = "00000000-0000-0000-0000-000000000000"
        fake_payload = jwt.utils.base64url_encode(json.dumps(forged).encode()).decode()
        for token in (
            f"{header}.{fake_payload}.{signature}",
            session["access_token"][:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB"),
        ):
            resp = await api.client.get("/api/auth/me", headers=api.bearer(token))
            assert api.error_code(resp, 401) == "invalid_token"

    async def test_token_signed_with_another_key(self, api: AuthApi) -> None:
        session = await api.register()
        token, _ = issue_access_token(
            _foreign_private_key(),
            user_id=session["user"]["id"],
            account_id=session["account"]["id"],
            role="admin",
            ttl=timedelta(minutes=5),
        )
        resp = await api.client.get("/api/auth/me", headers=api.bearer(token))
        assert api.error_code(resp, 401) == "invalid_token"

    async def test_token_of_a_user_that_is_gone(self, api: AuthApi) -> None:
        await api.register()
        stranger = make_token()  # validly signed, but no such user
        resp = await api.client.get("/api/auth/me", headers=api.bearer(stranger))
        assert resp.status_code == 401
