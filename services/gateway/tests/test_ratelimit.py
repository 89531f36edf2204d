"""Rate limits (Redis, `limits`): 429 in the error shape with Retry-After."""

from __future__ import annotations

import json

import httpx

from clarin_devkit.testing import auth_headers, make_token
from clarin_gateway.settings import GatewaySettings
from services.gateway.tests.helpers import Gateway, GatewayFactory, Upstream


def assert_429(resp: httpx.Response, window: int = 60) -> None:
    assert resp.status_code == 429, resp.text
    assert resp.json()["error"]["code"] == "rate_limited"
    retry_after = int(resp.headers["retry-after"])
    assert 1 <= retry_after <= window


async def login(gw: Gateway, email: str, password: str = "wrong") -> httpx.Response:
    return await gw.client.post("/api/auth/login", json={"email": email, "password": password})


async def test_forty_wrong_logins_for_one_email_are_limited_by_default(
    gateway: Gateway, upstreams: dict[str, Upstream]
) -> None:
    statuses = [(await login(gateway, "victim@example.com")).status_code for _ in range(40)]
    assert statuses[0] == 401
    assert statuses[-1] == 429
    limited = await login(gateway, "victim@example.com", "right")
    assert_429(limited)
    # the service saw only the requests that were let through
    assert len(upstreams["auth"].seen) == statuses.count(401)


async def test_login_limit_per_email(
    gateway_factory: GatewayFactory, upstreams: dict[str, Upstream]
) -> None:
    async with gateway_factory(rate_limit_login_per_email="3/minute") as gw:
        for _ in range(3):
            assert (await login(gw, "a@example.com")).status_code == 401
        # the same address written differently is the same address
        assert_429(await login(gw, "  A@Example.COM "))
        # another address from the same IP is still served
        ok = await login(gw, "b@example.com", "right")
        assert ok.status_code == 200
        # the body reached the service byte for byte
        assert json.loads(ok.json()["echo"]["body"]) == {
            "email": "b@example.com",
            "password": "right",
        }


async def test_login_limit_per_ip(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(rate_limit_login_per_ip="4/minute") as gw:
        for i in range(4):
            assert (await login(gw, f"user{i}@example.com")).status_code == 401
        assert_429(await login(gw, "fresh@example.com", "right"))
        # a login without an email is limited by IP too
        resp = await gw.client.post("/api/auth/login", content=b"not json")
        assert_429(resp)


async def test_register_limits(gateway_factory: GatewayFactory) -> None:
    body = {"account_name": "Acme", "name": "Ana", "email": "ana@example.com", "password": "x" * 8}
    async with gateway_factory(
        rate_limit_register_per_email="2/minute", rate_limit_register_per_ip="4/minute"
    ) as gw:
        assert (await gw.client.post("/api/auth/register", json=body)).status_code == 200
        assert (await gw.client.post("/api/auth/register", json=body)).status_code == 200
        assert_429(await gw.client.post("/api/auth/register", json=body))
        # the refused attempt still counted for the IP (3 of 4)
        other = {**body, "email": "bob@example.com"}
        assert (await gw.client.post("/api/auth/register", json=other)).status_code == 200
        assert_429(await gw.client.post("/api/auth/register", json={**body, "email": "c@x.io"}))


async def test_refresh_limit_per_ip(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(rate_limit_refresh_per_ip="2/minute") as gw:
        for _ in range(2):
            resp = await gw.client.post("/api/auth/refresh", json={"refresh_token": "r"})
            assert resp.status_code == 200
        assert_429(await gw.client.post("/api/auth/refresh", json={"refresh_token": "r"}))
        # logout is not limited by the refresh rule
        assert (await gw.client.post("/api/auth/logout", json={"refresh_token": "r"})).is_success


async def test_message_sends_are_limited_per_account(
    gateway_factory: GatewayFactory, upstreams: dict[str, Upstream]
) -> None:
    account_a = make_token(account_id="00000000-0000-0000-0000-00000000000a")
    other_user_a = make_token(account_id="00000000-0000-0000-0000-00000000000a")
    account_b = make_token(account_id="00000000-0000-0000-0000-00000000000b")
    async with gateway_factory(rate_limit_send_per_account="2/minute") as gw:
        send = {"chat_id": "c", "body": "hi"}
        assert (
            await gw.client.post("/api/messages/send", json=send, headers=auth_headers(account_a))
        ).status_code == 200
        assert (
            await gw.client.post(
                "/api/messages/send/media", files={"file": b"x"}, headers=auth_headers(account_a)
            )
        ).status_code == 200
        # the whole account shares the budget, whichever user sends
        assert_429(
            await gw.client.post(
                "/api/messages/send", json=send, headers=auth_headers(other_user_a)
            )
        )
        ok_b = await gw.client.post(
            "/api/messages/send", json=send, headers=auth_headers(account_b)
        )
        assert ok_b.status_code == 200
        # reading is not a send
        chats = await gw.client.get("/api/chats", headers=auth_headers(account_a))
        assert chats.status_code == 200


async def test_redis_down_fails_open(gateway_factory: GatewayFactory, dead_url: str) -> None:
    redis_url = dead_url.replace("http://", "redis://") + "/0"
    async with gateway_factory(redis_url=redis_url, rate_limit_login_per_email="1/minute") as gw:
        for _ in range(3):
            assert (await login(gw, "a@example.com")).status_code == 401


def test_bad_limit_notation_is_refused() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        GatewaySettings(rate_limit_login_per_email="lots")
