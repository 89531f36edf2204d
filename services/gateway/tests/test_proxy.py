"""Forwarding /api/* to the owning service."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from clarin_devkit.testing import auth_headers, make_token
from services.gateway.tests.helpers import Gateway, GatewayFactory, Upstream

ROUTES = {
    "/api/auth/me": "auth",
    "/api/users": "auth",
    "/api/users/42": "auth",
    "/api/devices": "devices",
    "/api/devices/1/connect": "devices",
    "/api/chats": "messaging",
    "/api/chats/1/messages": "messaging",
    "/api/messages/send": "messaging",
    "/api/media/abc": "messaging",
    "/api/search/messages": "messaging",
    "/api/quick-replies": "messaging",
    "/api/quick-replies/7": "messaging",
    "/api/leads": "leads",
    "/api/leads/9": "leads",
    "/api/pipeline/stages": "leads",
    "/api/webhooks": "webhooks",
    "/api/webhooks/1/deliveries": "webhooks",
}


async def test_routes_reach_the_owning_service(
    gateway: Gateway, upstreams: dict[str, Upstream]
) -> None:
    headers = auth_headers(make_token())
    for path, service in ROUTES.items():
        resp = await gateway.client.get(path, headers=headers)
        assert resp.status_code == 200, (path, resp.text)
        assert resp.json()["service"] == service, path
        assert resp.json()["path"] == path


async def test_forwards_method_path_query_body_and_headers(
    gateway: Gateway, upstreams: dict[str, Upstream]
) -> None:
    token = make_token()
    body = json.dumps({"name": "Ana", "tags": ["x"]}).encode()
    resp = await gateway.client.put(
        "/api/leads/7%208?stage=new&q=a%20b&tag=1&tag=2",
        content=body,
        headers={
            **auth_headers(token),
            "Content-Type": "application/json",
            "X-Custom": "kept",
            "X-Request-Id": "req-abc-1",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "dropped",
            "X-Forwarded-For": "203.0.113.9",
        },
    )
    assert resp.status_code == 201, resp.text
    seen = upstreams["leads"].seen[-1]
    assert seen["method"] == "PUT"
    assert seen["raw_path"] == "/api/leads/7%208"
    assert seen["query"] == "stage=new&q=a%20b&tag=1&tag=2"
    assert seen["body"] == body.decode()
    headers = seen["headers"]
    assert headers["authorization"] == f"Bearer {token}"
    assert headers["content-type"] == "application/json"
    assert headers["x-custom"] == "kept"
    assert headers["x-request-id"] == "req-abc-1"
    assert "x-hop" not in headers
    # the peer (127.0.0.1) is a trusted proxy in test: the chain is handed on with it
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["host"] != gateway.url.removeprefix("http://")
    # the answer comes back with the upstream's headers and the same request id
    assert resp.headers["x-request-id"] == "req-abc-1"
    assert resp.headers["x-upstream"] == "leads"
    assert resp.headers["set-cookie"] == "a=b"


async def test_request_id_is_made_and_shared_when_missing(
    gateway: Gateway, upstreams: dict[str, Upstream]
) -> None:
    resp = await gateway.client.get("/api/chats", headers=auth_headers(make_token()))
    assert resp.status_code == 200
    rid = resp.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)  # made by the gateway
    assert upstreams["messaging"].seen[-1]["headers"]["x-request-id"] == rid


async def test_upstream_errors_pass_through_unchanged(gateway: Gateway) -> None:
    resp = await gateway.client.get("/api/chats/missing", headers=auth_headers(make_token()))
    assert resp.status_code == 404
    assert resp.json() == {
        "error": {"code": "not_found", "message": "Chat not found", "details": None}
    }
    assert resp.headers["x-upstream-error"] == "1"

    # FastAPI's own 422 of the fake passes through as it is, too
    bad = await gateway.client.post(
        "/api/leads/typed", json={"thing": {}}, headers=auth_headers(make_token())
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "thing", "leads_field"]


async def test_streams_a_large_upload(
    gateway_factory: GatewayFactory, upstreams: dict[str, Upstream]
) -> None:
    size = 24 * 1024 * 1024
    digest = hashlib.sha256()
    chunk = bytes(range(256)) * 1024

    async def body() -> AsyncIterator[bytes]:
        digest.update(chunk)
        yield chunk
        # the rest only once the service has seen the first bytes: a gateway that
        # buffered the upload would never get there
        await asyncio.wait_for(upstreams["messaging"].upload_started.wait(), 10)
        for _ in range(size // len(chunk) - 1):
            digest.update(chunk)
            yield chunk

    # a route allowed a body this large
    async with gateway_factory(max_body_bytes=size) as gateway:
        resp = await gateway.client.post(
            "/api/media/upload",
            content=body(),
            headers={**auth_headers(make_token()), "Content-Type": "application/octet-stream"},
        )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"size": size, "sha256": digest.hexdigest()}


async def test_streams_a_large_download(gateway: Gateway, upstreams: dict[str, Upstream]) -> None:
    up = upstreams["messaging"]
    up.download_size = 16 * 1024 * 1024
    received = 0
    async with gateway.client.stream(
        "GET", "/api/media/big", headers=auth_headers(make_token())
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/octet-stream"
        assert resp.headers["x-media"] == "yes"
        async for data in resp.aiter_raw():
            if received == 0:
                # first bytes arrived while the service is still holding the rest
                up.download_release.set()
            received += len(data)
    assert received == up.download_size


async def test_service_down_answers_503(gateway_factory: GatewayFactory, dead_url: str) -> None:
    async with gateway_factory(devices_url=dead_url) as gw:
        resp = await gw.client.post(
            "/api/devices",
            json={"name": "x"},
            headers={**auth_headers(make_token()), "X-Request-Id": "down-1"},
        )
        assert resp.status_code == 503
        assert resp.json()["error"] == {
            "code": "service_unavailable",
            "message": "The devices service is unavailable",
            "details": None,
        }
        assert resp.headers["x-request-id"] == "down-1"


async def test_slow_service_answers_503_after_the_timeout(
    gateway_factory: GatewayFactory, upstreams: dict[str, Upstream]
) -> None:
    async with gateway_factory(upstream_read_timeout=0.3) as gw:
        resp = await gw.client.get("/api/chats/slow", headers=auth_headers(make_token()))
        # the service has not answered: it answers only once released
        assert not upstreams["messaging"].slow_release.is_set()
        assert resp.status_code == 503
        assert resp.json()["error"] == {
            "code": "service_unavailable",
            "message": "The messaging service did not answer in time",
            "details": None,
        }


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (None, "unauthorized"),
        ("not-a-jwt", "invalid_token"),
        (make_token(ttl=timedelta(seconds=-60)), "token_expired"),
    ],
)
async def test_bad_token_is_rejected_before_the_service(
    gateway: Gateway, upstreams: dict[str, Upstream], token: str | None, code: str
) -> None:
    headers = auth_headers(token) if token else {}
    for method, path in (
        ("GET", "/api/chats"),
        ("POST", "/api/messages/send"),
        ("GET", "/api/auth/me"),
    ):
        resp = await gateway.client.request(method, path, headers=headers, json={})
        assert resp.status_code == 401, (path, resp.text)
        assert resp.json()["error"]["code"] == code
    assert all(not up.seen for up in upstreams.values())


async def test_public_auth_routes_need_no_token(
    gateway: Gateway, upstreams: dict[str, Upstream]
) -> None:
    for path in ("/api/auth/register", "/api/auth/refresh", "/api/auth/logout"):
        resp = await gateway.client.post(path, json={"refresh_token": "r"})
        assert resp.status_code == 200, (path, resp.text)
        assert resp.json()["path"] == path
    login = await gateway.client.post(
        "/api/auth/login", json={"email": "a@example.com", "password": "right"}
    )
    assert login.status_code == 200
    assert json.loads(login.json()["echo"]["body"]) == {
        "email": "a@example.com",
        "password": "right",
    }


async def test_unknown_api_path_is_404(gateway: Gateway, upstreams: dict[str, Upstream]) -> None:
    for path in ("/api/unknown", "/api/usersx", "/api/auth", "/api"):
        for headers in ({}, auth_headers(make_token())):
            resp = await gateway.client.get(path, headers=headers)
            assert resp.status_code == 404, path
            assert resp.json()["error"]["code"] == "not_found"
    assert all(not up.seen for up in upstreams.values())


async def test_cors_preflight(gateway: Gateway, upstreams: dict[str, Upstream]) -> None:
    allowed = await gateway.client.options(
        "/api/messages/send",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

    refused = await gateway.client.options(
        "/api/messages/send",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    assert all(not up.seen for up in upstreams.values())

    # a real cross-origin request gets the header on the forwarded answer
    resp = await gateway.client.get(
        "/api/chats",
        headers={**auth_headers(make_token()), "Origin": "http://localhost:3000"},
    )
    assert resp.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "x-request-id" in resp.headers["access-control-expose-headers"].lower()
