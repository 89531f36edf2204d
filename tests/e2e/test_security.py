"""Issue 13 through the running system: the gateway's bypasses closed, roles, ended
sessions, the route by caller matrix from the merged OpenAPI, and schemathesis."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.rawhttp import raw_request

from .helpers import Socket, bearer, linked_device, register, sim
from .system import ARTIFACTS, System


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, timeout=15) as c:
        yield c


async def agent_of(client: httpx.AsyncClient, admin: dict[str, Any]) -> dict[str, Any]:
    email = f"agent-{uuid.uuid4().hex[:10]}@example.com"
    created = await client.post(
        "/api/users",
        json={"name": "Luis", "email": email, "password": "agente secreto", "role": "agent"},
        headers=bearer(admin),
    )
    assert created.status_code == 201, created.text
    login = await client.post(
        "/api/auth/login", json={"email": email, "password": "agente secreto"}
    )
    assert login.status_code == 200, login.text
    session: dict[str, Any] = login.json()
    return session


# ---- the bypasses of the issue, each through the real gateway ------------------------


async def test_dot_segments_no_longer_reach_login_or_internals(
    system: System, client: httpx.AsyncClient
) -> None:
    session = await register(client)
    body = json.dumps({"email": session["email"], "password": "correct horse battery"}).encode()
    for path in (
        "/api/users/../auth/login",
        "/api/users/%2e%2e/auth/login",
        "/api/users%2F..%2Fauth/login",
        "/api/users%252F..%252Fauth/login",
    ):
        resp = await raw_request(
            system.base_url, "POST", path, headers={"Content-Type": "application/json"}, body=body
        )
        assert resp.status_code == 400, (path, resp.content)
        assert resp.json()["error"]["code"] == "bad_path"
    for path in ("/api/leads/../../metrics", "/api/auth/x/../../../docs", "/api//leads"):
        resp = await raw_request(system.base_url, "GET", path, headers=bearer(session))
        assert resp.status_code == 400, path
        assert b"clarin_http_requests_total" not in resp.content
    # the send limit's path is only reached as itself
    sent = await raw_request(
        system.base_url,
        "POST",
        "/api/chats/../messages/send",
        headers={**bearer(session), "Content-Type": "application/json"},
        body=b"{}",
    )
    assert sent.status_code == 400


async def test_trailing_slash_answers_the_route(client: httpx.AsyncClient) -> None:
    session = await register(client)
    resp = await client.get("/api/leads/", headers=bearer(session))
    assert resp.status_code == 200, resp.text
    assert "location" not in resp.headers
    assert resp.json()["items"] == []


async def test_bodies_are_capped(client: httpx.AsyncClient) -> None:
    big = json.dumps({"refresh_token": "x" * (8 * 1024 * 1024)})
    for path in ("/api/auth/refresh", "/api/auth/logout"):
        resp = await client.post(path, content=big, headers={"Content-Type": "application/json"})
        assert resp.status_code == 413, path
        assert resp.json()["error"]["code"] == "payload_too_large"
    session = await register(client)
    leads = await client.post(
        "/api/leads",
        content=json.dumps({"name": "x", "notes": "n" * (2 * 1024 * 1024)}),
        headers={**bearer(session), "Content-Type": "application/json"},
    )
    assert leads.status_code == 413


async def test_metrics_only_on_the_metrics_port(system: System, client: httpx.AsyncClient) -> None:
    public = await client.get("/metrics")
    assert public.status_code == 404
    async with httpx.AsyncClient() as internal:
        metrics = await internal.get(system.metrics_url)
    assert metrics.status_code == 200
    assert "clarin_http_requests_total" in metrics.text


async def test_security_headers_on_the_app_and_api(client: httpx.AsyncClient) -> None:
    page = await client.get("/inbox", headers={"Accept": "text/html"})
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"]
    api = await client.get("/api/auth/me")
    assert api.headers["x-content-type-options"] == "nosniff"


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    client: httpx.AsyncClient,
) -> None:
    # the e2e gateway runs as in dev/test: loopback is a trusted proxy, so two
    # clients behind it have two buckets; the prod default (no proxy) is tested
    # in the gateway's own tests
    session = await register(client)
    statuses = []
    for i in range(3):
        resp = await client.post(
            "/api/auth/login",
            json={"email": session["email"], "password": "wrong password"},
            headers={"X-Forwarded-For": f"198.51.100.{i}"},
        )
        statuses.append(resp.status_code)
    assert statuses == [401, 401, 401]


# ---- roles and ended sessions ---------------------------------------------------------


async def test_agent_cannot_unlink_or_delete_numbers(
    system: System, client: httpx.AsyncClient
) -> None:
    admin = await register(client)
    device = await linked_device(client, admin, system.nats_url, "34600999888")
    agent = await agent_of(client, admin)
    for method, path in (
        ("POST", f"/api/devices/{device['id']}/logout"),
        ("DELETE", f"/api/devices/{device['id']}"),
        ("POST", "/api/devices"),
    ):
        resp = await client.request(method, path, json={"name": "x"}, headers=bearer(agent))
        assert resp.status_code == 403, (path, resp.text)
        assert resp.json()["error"]["code"] == "forbidden"
    got = await client.get(f"/api/devices/{device['id']}", headers=bearer(agent))
    assert got.json()["status"] == "connected"
    users = await client.patch(
        f"/api/users/{admin['user']['id']}", json={"role": "agent"}, headers=bearer(agent)
    )
    assert users.status_code == 403


async def test_disabling_a_user_closes_their_sockets_within_5_s(
    system: System, client: httpx.AsyncClient
) -> None:
    admin = await register(client)
    agent = await agent_of(client, admin)
    async with Socket(system.base_url, agent["access_token"]) as ws:
        await ws.connection.send(json.dumps({"type": "ping"}))
        await ws.wait_for(lambda f: f.get("type") == "pong")
        started = time.monotonic()
        resp = await client.patch(
            f"/api/users/{agent['user']['id']}", json={"disabled": True}, headers=bearer(admin)
        )
        assert resp.status_code == 200, resp.text
        await asyncio.wait_for(ws.connection.wait_closed(), 5)
        assert time.monotonic() - started < 5
        assert ws.connection.close_code == 4401
    me = await client.get("/api/auth/me", headers=bearer(agent))
    assert me.status_code == 401 and me.json()["error"]["code"] == "token_revoked"
    refreshed = await client.post(
        "/api/auth/refresh", json={"refresh_token": agent["refresh_token"]}
    )
    assert refreshed.status_code == 401
    login = await client.post(
        "/api/auth/login", json={"email": agent["user"]["email"], "password": "agente secreto"}
    )
    assert login.status_code == 403 and login.json()["error"]["code"] == "user_disabled"


async def test_logout_closes_that_sessions_socket(
    system: System, client: httpx.AsyncClient
) -> None:
    admin = await register(client)
    async with Socket(system.base_url, admin["access_token"]) as ws:
        await ws.connection.send(json.dumps({"type": "ping"}))
        await ws.wait_for(lambda f: f.get("type") == "pong")
        out = await client.post("/api/auth/logout", json={"refresh_token": admin["refresh_token"]})
        assert out.status_code == 204
        await asyncio.wait_for(ws.connection.wait_closed(), 5)
        assert ws.connection.close_code == 4401


# ---- every route by {no token, agent, admin of another account} ------------------------

PUBLIC = {
    ("POST", "/api/auth/register"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/refresh"),
    ("POST", "/api/auth/logout"),
}
# API.md "Roles": what an admin alone may do. Anything not listed here is open to
# agents (a route added later is checked as such unless it is added here).
ADMIN_ONLY = {
    ("POST", "/api/devices"),
    ("DELETE", "/api/devices/{}"),
    ("POST", "/api/devices/{}/pair-phone"),
    ("POST", "/api/devices/{}/logout"),
    ("POST", "/api/users"),
    ("PATCH", "/api/users/{}"),
    ("DELETE", "/api/users/{}"),
}
# webhooks and campaigns are managed by admins: every write there is admin-only
# (whether agents may read them is left to those services)
ADMIN_ONLY_PREFIXES = ("/api/webhooks", "/api/campaigns")
PARAM = re.compile(r"\{[^}]+\}")


def _template(path: str) -> str:
    return PARAM.sub("{}", path)


def admin_only(method: str, path: str) -> bool | None:
    """True: agents get 403; False: agents are allowed; None: either is fine."""
    template = _template(path)
    if (method, template) in ADMIN_ONLY:
        return True
    if template.startswith(ADMIN_ONLY_PREFIXES):
        return None if method == "GET" else True
    return False


def _resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


# values for fields whose schema has a pattern this sampler cannot satisfy
FIELD_HINTS: dict[str, Any] = {"phone": "34600111222", "to": "34600111222", "emoji": "👍"}


def sample(schema: dict[str, Any], doc: dict[str, Any], depth: int = 0, name: str = "") -> Any:
    """A minimal value the schema accepts (required fields only)."""
    if name in FIELD_HINTS:
        return FIELD_HINTS[name]
    schema = _resolve(schema, doc)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if _resolve(o, doc).get("type") != "null"]
            return sample(options[0] if options else schema[key][0], doc, depth + 1)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {
            name: sample(props[name], doc, depth + 1, name)
            for name in schema.get("required", [])
            if name in props and depth < 6
        }
    if kind == "array":
        return []
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if kind == "number":
        return 1
    if kind == "boolean":
        return False
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    if schema.get("format") == "email":
        return "someone@example.com"
    if kind == "string":
        return "x" * max(int(schema.get("minLength", 1)), 8)
    return None


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, item in doc["paths"].items():
        for method in ("get", "post", "put", "patch", "delete"):
            if method in item:
                found.append((method.upper(), path, item[method]))
    return found


def body_for(op: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    content = (op.get("requestBody") or {}).get("content") or {}
    if "application/json" in content:
        return {"json": sample(content["application/json"].get("schema", {}), doc)}
    if "multipart/form-data" in content:
        form = sample(content["multipart/form-data"].get("schema", {}), doc) or {}
        files = {k: ("a.txt", b"x", "text/plain") for k in form if k == "file"}
        data = {k: str(v) for k, v in form.items() if k != "file"}
        return {"data": data, "files": files or {"file": ("a.txt", b"x", "text/plain")}}
    return {}


async def test_every_route_refuses_strangers(system: System, client: httpx.AsyncClient) -> None:
    """Generated from the merged OpenAPI: a new route cannot be missed."""
    owner = await register(client)
    device = await linked_device(client, owner, system.nats_url, "34600555444")
    await sim(
        system.nats_url,
        device["id"],
        "inbound",
        {"from": "5215512340000", "push_name": "Matriz", "body": "hola"},
    )
    chat = message = lead = None
    for _ in range(100):
        chats = (await client.get("/api/chats", headers=bearer(owner))).json()["items"]
        leads = (await client.get("/api/leads", headers=bearer(owner))).json()["items"]
        if chats and leads:
            chat, lead = chats[0], leads[0]
            break
        await asyncio.sleep(0.1)
    assert chat is not None and lead is not None
    messages = await client.get(f"/api/chats/{chat['id']}/messages", headers=bearer(owner))
    message = messages.json()["items"][0]
    agent = await agent_of(client, owner)
    stranger = await register(client)
    ids = {
        "/api/devices": device["id"],
        "/api/chats": chat["id"],
        "/api/messages": message["id"],
        "/api/media": message["id"],
        "/api/leads": lead["id"],
        "/api/users": agent["user"]["id"],
    }

    def concrete(path: str, real: bool) -> str:
        prefix = "/".join(path.split("/")[:3])
        value = ids.get(prefix, str(uuid.uuid4())) if real else str(uuid.uuid4())
        return PARAM.sub(value, path)

    doc = (await client.get("/api/openapi.json")).json()
    assert not doc.get("x-unavailable-services"), doc.get("x-unavailable-services")
    ops = operations(doc)
    assert len(ops) >= 25, [(m, p) for m, p, _ in ops]
    failures: list[str] = []
    for method, path, op in ops:
        kwargs = body_for(op, doc)
        has_id = "{" in path
        # no token: 401 before any service, except the public routes
        anon = await client.request(method, concrete(path, True), **kwargs)
        if (method, path) in PUBLIC:
            # they answer on their own (a wrong password is a 401 too); never a 5xx
            if anon.status_code >= 500:
                failures.append(f"{method} {path} without a token: {anon.status_code}")
            continue
        if anon.status_code != 401:
            failures.append(f"{method} {path} without a token: {anon.status_code}")
        # admin of another account: another account's resource is not found
        theirs = await client.request(
            method, concrete(path, True), headers=bearer(stranger), **kwargs
        )
        if has_id and theirs.status_code != 404:
            failures.append(f"{method} {path} by another account: {theirs.status_code}")
        if theirs.status_code >= 500 or theirs.status_code in (401, 403):
            failures.append(f"{method} {path} by another admin: {theirs.status_code}")
        # agent: admin routes 403 (changing nothing), the rest allowed
        role_rule = admin_only(method, path)
        if role_rule is None:
            continue
        if role_rule:
            resp = await client.request(
                method, concrete(path, True), headers=bearer(agent), **kwargs
            )
            if resp.status_code != 403 or resp.json()["error"]["code"] != "forbidden":
                failures.append(f"{method} {path} by an agent: {resp.status_code}, want 403")
        else:
            # reads on real ids; writes on unknown ids, so that the agent changes none
            # of the owner's resources
            resp = await client.request(
                method, concrete(path, method == "GET"), headers=bearer(agent), **kwargs
            )
            if resp.status_code in (401, 403) or resp.status_code >= 500:
                failures.append(f"{method} {path} by an agent: {resp.status_code}")
    assert not failures, "\n".join(failures)
    # and nothing of the owner's changed
    got = await client.get(f"/api/devices/{device['id']}", headers=bearer(owner))
    assert got.status_code == 200 and got.json()["status"] == "connected"
    assert (await client.get(f"/api/leads/{lead['id']}", headers=bearer(owner))).status_code == 200


# ---- schemathesis ---------------------------------------------------------------------


def test_schemathesis_finds_no_server_error(system: System) -> None:
    """Fuzz every operation of the merged OpenAPI (bounded in time) as a signed-in admin."""
    session = asyncio.run(_register_sync(system.base_url))
    report = ARTIFACTS / "schemathesis"
    report.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).parent / "schemathesis"
    common = [
        "--checks",
        "not_a_server_error",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "15",
        "--workers",
        "1",
        "--seed",
        "13",
        "--generation-database",
        "none",
        "--no-color",
        "-H",
        f"Authorization: Bearer {session['access_token']}",
        # its own client address, so its logins and sign-ups do not use up the
        # per-IP budget of the other tests (loopback is a trusted proxy in test)
        "-H",
        "X-Forwarded-For: 203.0.113.250",
        "--report",
        "junit",
        "--report-dir",
        str(report),
    ]
    # Changing a user may demote the fuzzer itself (it creates a second admin, then
    # makes itself an agent), which ends its token: those operations go last, on
    # their own, so that every other operation is fuzzed signed in.
    users_by_id = r"^/api/users/\{"
    runs = [
        ["--exclude-path-regex", users_by_id, "--max-time", "150"],
        ["--include-path-regex", users_by_id, "--max-time", "30"],
    ]
    # wrong credentials are all a fuzzer can send there; any other operation that
    # only ever answered 401 means the run lost its session
    only_401 = {"POST /api/auth/login", "POST /api/auth/refresh"}
    outputs = []
    for first, extra in zip((True, False), runs, strict=True):
        cmd = [str(exe), "run", f"{system.base_url}/api/openapi.json", *common, *extra]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        outputs.append(result.stdout + result.stderr)
        (report / "output.txt").write_text("\n\n".join(outputs))
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        if first:  # the user operations may well end their own session
            assert _only_401(result.stdout) <= only_401, result.stdout[-3000:]


def _only_401(output: str) -> set[str]:
    """The operations schemathesis says answered nothing but 401/403."""
    found: set[str] = set()
    section = output.split("Authentication failed", 1)
    if len(section) == 1:
        return set()
    for line in section[1].split("💡", 1)[0].splitlines():
        m = re.match(r"\s+- ([A-Z]+ /\S+)$", line)
        if m:
            found.add(m.group(1))
    return found


async def _register_sync(base_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as c:
        return await register(c)
