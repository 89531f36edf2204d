"""The gateway's own defences, through a running gateway in front of echoing services.

Paths are sent byte for byte (tests.rawhttp): httpx would remove dot segments
before they ever reached the gateway.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from clarin_devkit.testing import auth_headers, make_token
from clarin_gateway.guard import BadPath, normalise_path
from services.gateway.tests.helpers import Gateway, GatewayFactory, Upstream
from tests.rawhttp import RawResponse, raw_request

BAD_PATHS = [
    # dot segments: each of these reached a service (and skipped a limit) before
    "/api/users/../auth/login",
    "/api/chats/../messages/send",
    "/api/leads/../../metrics",
    "/api/auth/x/../../../docs",
    "/api/./auth/login",
    "/api/auth/login/.",
    "/api/users/%2e%2e/auth/login",
    "/api/users/%2E%2E/auth/login",
    "/api/users/.%2e/auth/login",
    # empty segments
    "/api//auth/login",
    "//api/auth/login",
    # encoded slashes and backslashes, single and double encoded
    "/api/users%2F..%2Fauth/login",
    "/api/users%2f..%2fauth/login",
    "/api/users%5C..%5Cauth/login",
    "/api/users%5c..%5cauth/login",
    "/api/users\\..\\auth/login",
    "/api/users%252F..%252Fauth/login",
    "/api/users%252e%252e/auth/login",
    "/api/leads/%00",
]


@pytest.mark.parametrize("path", BAD_PATHS)
async def test_ambiguous_paths_answer_400_and_reach_no_service(
    gateway: Gateway, upstreams: dict[str, Upstream], path: str
) -> None:
    for method in ("GET", "POST"):
        resp = await raw_request(
            gateway.url,
            method,
            path,
            headers={**auth_headers(make_token()), "Content-Type": "application/json"},
            body=json.dumps({"email": "a@example.com", "password": "right"}).encode(),
        )
        assert resp.status_code == 400, (path, resp.content)
        assert resp.json()["error"]["code"] == "bad_path"
        assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["x-request-id"])
    assert all(not up.seen for up in upstreams.values())


async def test_dot_segments_no_longer_skip_the_login_limit(
    gateway_factory: GatewayFactory, upstreams: dict[str, Upstream]
) -> None:
    body = json.dumps({"email": "victim@example.com", "password": "guess"}).encode()
    async with gateway_factory(rate_limit_login_per_email="2/minute") as gw:
        statuses = []
        for path in ["/api/auth/login"] * 2 + ["/api/users/../auth/login"] * 3:
            resp = await raw_request(
                gw.url, "POST", path, headers={"Content-Type": "application/json"}, body=body
            )
            statuses.append(resp.status_code)
        assert statuses == [401, 401, 400, 400, 400]
        # and the normal path stays limited
        limited = await gw.client.post("/api/auth/login", content=body)
        assert limited.status_code == 429
    assert len(upstreams["auth"].seen) == 2


async def test_trailing_slash_is_the_route_itself(
    gateway: Gateway, upstreams: dict[str, Upstream]
) -> None:
    headers = auth_headers(make_token())
    resp = await gateway.client.get("/api/leads/?stage=new", headers=headers)
    assert resp.status_code == 200, resp.text
    assert "location" not in resp.headers
    assert upstreams["leads"].seen[-1]["raw_path"] == "/api/leads"
    assert upstreams["leads"].seen[-1]["query"] == "stage=new"
    # public routes are public with a slash too, and limits apply the same
    login = await gateway.client.post(
        "/api/auth/login/", json={"email": "a@example.com", "password": "right"}
    )
    assert login.status_code == 200
    assert upstreams["auth"].seen[-1]["raw_path"] == "/api/auth/login"


async def test_a_service_redirect_never_names_the_internal_host(
    gateway: Gateway, upstreams: dict[str, Upstream]
) -> None:
    resp = await gateway.client.get("/api/chats/redirect", headers=auth_headers(make_token()))
    assert resp.status_code == 307
    assert resp.headers["location"] == "/api/chats?x=1"
    assert upstreams["messaging"].url.split("//")[1] not in resp.text + str(resp.headers)


# ---- client address ---------------------------------------------------------------


async def _login_from(gw: Gateway, forwarded_for: str) -> int:
    resp = await gw.client.post(
        "/api/auth/login",
        json={"email": f"{forwarded_for}@example.com", "password": "x"},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return resp.status_code


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    gateway_factory: GatewayFactory, upstreams: dict[str, Upstream]
) -> None:
    async with gateway_factory(trusted_proxies=[], rate_limit_login_per_ip="3/minute") as gw:
        # rotating the header used to give every attempt a fresh per-IP bucket
        statuses = [await _login_from(gw, f"198.51.100.{i}") for i in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        # what the service is told: the peer, not the planted addresses
        assert upstreams["auth"].seen[-1]["headers"]["x-forwarded-for"] == "127.0.0.1"


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    gateway_factory: GatewayFactory, upstreams: dict[str, Upstream]
) -> None:
    async with gateway_factory(
        trusted_proxies=["127.0.0.0/8"], rate_limit_login_per_ip="2/minute"
    ) as gw:
        # two clients behind the proxy: each has its own bucket
        assert [await _login_from(gw, "203.0.113.1") for _ in range(3)] == [401, 401, 429]
        assert await _login_from(gw, "203.0.113.2") == 401
        # a client-written address left of the proxy's is not believed
        assert await _login_from(gw, "6.6.6.6, 203.0.113.1") == 429
        seen = upstreams["auth"].seen[-1]["headers"]
        assert seen["x-forwarded-for"] == "203.0.113.2, 127.0.0.1"


def test_prod_trusts_no_proxy_by_default_and_dev_trusts_loopback() -> None:
    from clarin_common.settings import DEV_JWT_PUBLIC_KEY
    from clarin_gateway.settings import GatewaySettings

    # a developer's .env (make run) must not decide this test
    dev = GatewaySettings(_env_file=None, env="dev")
    assert dev.trusted_proxies == ["127.0.0.1", "::1"]
    real_key = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAxxxx\n-----END PUBLIC KEY-----\n"
    assert real_key != DEV_JWT_PUBLIC_KEY
    prod = GatewaySettings(_env_file=None, env="prod", jwt_public_key=real_key)
    assert prod.trusted_proxies == []
    assert GatewaySettings(env="prod", jwt_public_key=real_key, trusted_proxies=["10.0.0.0/8"])
    with pytest.raises(ValueError):
        GatewaySettings(trusted_proxies=["not-an-address"])


# ---- body caps --------------------------------------------------------------------


async def test_large_json_bodies_answer_413_without_reaching_a_service(
    gateway: Gateway, upstreams: dict[str, Upstream]
) -> None:
    big = json.dumps({"refresh_token": "r" * (8 * 1024 * 1024)}).encode()
    for path, headers in (
        ("/api/auth/refresh", {}),
        ("/api/auth/logout", {}),
        ("/api/leads", auth_headers(make_token())),
        ("/api/auth/login", {}),
    ):
        resp = await gateway.client.post(
            path, content=big, headers={**headers, "Content-Type": "application/json"}
        )
        assert resp.status_code == 413, (path, resp.text)
        assert resp.json()["error"]["code"] == "payload_too_large"
    assert all(not up.seen for up in upstreams.values())
    # one byte under the default cap still goes through
    ok = await gateway.client.post(
        "/api/auth/refresh", content=b"x" * (1024 * 1024), headers={"Content-Type": "text/plain"}
    )
    assert ok.status_code == 200


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for _ in range(total // size):
        yield b"y" * size
        await asyncio.sleep(0)


async def test_chunked_bodies_are_cut_at_the_limit(
    gateway_factory: GatewayFactory, upstreams: dict[str, Upstream]
) -> None:
    limit = 256 * 1024
    async with gateway_factory(max_body_bytes=limit) as gw:
        headers = {**auth_headers(make_token()), "Content-Type": "application/octet-stream"}
        # no Content-Length: the gateway only learns the size by counting
        resp = await raw_request(
            gw.url, "POST", "/api/media/upload", headers=headers, body=_chunks(4 * 1024 * 1024)
        )
        assert resp.status_code == 413, resp.content
        assert resp.json()["error"]["code"] == "payload_too_large"
        # the service got at most the limit, never the rest
        assert upstreams["messaging"].upload_received <= limit
        # a chunked body under the limit arrives whole
        small = await raw_request(
            gw.url, "POST", "/api/media/upload", headers=headers, body=_chunks(128 * 1024)
        )
        assert small.status_code == 200
        assert small.json()["size"] == 128 * 1024


async def test_uploads_have_their_own_limit(
    gateway_factory: GatewayFactory, upstreams: dict[str, Upstream]
) -> None:
    async with gateway_factory(max_body_bytes=64 * 1024, max_upload_bytes=512 * 1024) as gw:
        headers = auth_headers(make_token())
        ok = await gw.client.post(
            "/api/messages/send/media",
            files={"file": ("a.bin", b"z" * 300 * 1024)},
            headers=headers,
        )
        assert ok.status_code == 200, ok.text
        big = await gw.client.post(
            "/api/messages/send/media",
            files={"file": ("a.bin", b"z" * 600 * 1024)},
            headers=headers,
        )
        assert big.status_code == 413
        # the JSON routes keep the small cap
        json_route = await gw.client.post(
            "/api/messages/send", content=b"{" + b" " * 100 * 1024 + b"}", headers=headers
        )
        assert json_route.status_code == 413


# ---- metrics and headers ----------------------------------------------------------


async def test_metrics_are_not_on_the_public_port(gateway: Gateway) -> None:
    for path in ("/metrics", "/metrics/"):
        resp = await gateway.client.get(path, headers={"Accept": "text/html"})
        assert resp.status_code == 404, path
        assert "clarin_http_requests_total" not in resp.text


async def test_metrics_port_serves_them(gateway_factory: GatewayFactory) -> None:
    from clarin_devkit.testing import free_port
    from clarin_gateway.main import start_metrics_server
    from clarin_gateway.settings import GatewaySettings

    port = free_port()
    start_metrics_server(GatewaySettings(metrics_port=port))
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert resp.status_code == 200
    assert "clarin_gateway_ws_connections" in resp.text


async def test_every_answer_has_nosniff_and_html_a_policy(gateway: Gateway) -> None:
    token = auth_headers(make_token())
    answers: list[httpx.Response | RawResponse] = [
        await gateway.client.get("/api/chats", headers=token),
        await gateway.client.get("/api/chats"),
        await gateway.client.get("/api/openapi.json"),
        await gateway.client.get("/healthz"),
        await raw_request(gateway.url, "GET", "/api/../x"),
    ]
    for resp in answers:
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    for resp in (
        await gateway.client.get("/", headers={"Accept": "text/html"}),
        await gateway.client.get("/api/docs"),
    ):
        assert resp.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
        assert resp.headers["x-frame-options"] == "DENY"
    # HTML that a service answers is sandboxed: it never runs as a page of this origin
    page = await gateway.client.get("/api/chats/page", headers=token)
    csp = page.headers["content-security-policy"]
    assert "sandbox" in csp and "default-src 'none'" in csp


def test_normalise_path_keeps_ordinary_paths() -> None:
    assert normalise_path(b"/") == ("/", b"/")
    assert normalise_path(b"/api/leads/") == ("/api/leads", b"/api/leads")
    assert normalise_path(b"/api/leads/a%20b") == ("/api/leads/a b", b"/api/leads/a%20b")
    assert normalise_path("/api/leads/ñ".encode()) == ("/api/leads/ñ", b"/api/leads/%C3%B1")
    assert normalise_path(b"/assets/app...js") == ("/assets/app...js", b"/assets/app...js")
    for bad in (b"api", b"/a/%ff", b"/a/..", b"/a//"):
        with pytest.raises(BadPath):
            normalise_path(bad)
