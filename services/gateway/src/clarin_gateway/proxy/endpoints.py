"""``/api/*``: the merged API docs and the forwarding to the owning service."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.responses import Response

from clarin_common.auth import current_principal
from clarin_common.errors import PayloadTooLarge
from clarin_gateway.clientip import ClientInfo, TrustedProxies
from clarin_gateway.deps import GatewayCtx
from clarin_gateway.exceptions import BadContentLength, NoRoute, RequestBodyTooLarge
from clarin_gateway.openapi import docs_page
from clarin_gateway.proxy.routing import (
    LOGIN_PATH,
    REFRESH_PATH,
    REGISTER_PATH,
    SEND_PATHS,
    body_kind,
    is_public,
    service_for,
)

router = APIRouter()

OPENAPI_PATH = "/api/openapi.json"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@router.get(OPENAPI_PATH, include_in_schema=False)
async def merged_openapi(ctx: GatewayCtx) -> JSONResponse:
    return JSONResponse(await ctx.openapi.document(), headers={"Cache-Control": "no-cache"})


@router.get("/api/docs", include_in_schema=False)
async def api_docs(ctx: GatewayCtx) -> HTMLResponse:
    return HTMLResponse(docs_page(await ctx.openapi.document(), OPENAPI_PATH))


def client_info(request: Request, proxies: TrustedProxies) -> ClientInfo:
    cached = getattr(request.state, "client_info", None)
    if isinstance(cached, ClientInfo):
        return cached
    info = proxies.client(request)
    request.state.client_info = info
    return info


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse at once a body whose Content-Length is already past the limit."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise BadContentLength() from None
    if length > limit:
        raise RequestBodyTooLarge(limit)


async def read_small_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestBodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def email_of(body: bytes) -> str | None:
    """The normalised ``email`` of a JSON body (auth validates the rest)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    email = data.get("email") if isinstance(data, dict) else None
    if not isinstance(email, str) or not email.strip():
        return None
    return email.strip().lower()


@router.api_route("/api/{rest:path}", methods=ALL_METHODS, include_in_schema=False)
async def forward(request: Request, ctx: GatewayCtx) -> Response:
    # the path was normalised before routing (guard.PathGuard): this one value
    # decides the service, the limits and publicness, and is what gets forwarded
    path = request.url.path
    service = service_for(path)
    if service is None:
        raise NoRoute(path)
    limiter, proxy = ctx.limiter, ctx.proxy
    client = client_info(request, ctx.trusted_proxies)
    body_limit = ctx.settings.body_limit(body_kind(path))
    body: bytes | None = None
    if is_public(path):
        if request.method == "POST" and path in (LOGIN_PATH, REGISTER_PATH):
            check_declared_length(request, body_limit)
            body = await read_small_body(request, body_limit)
            kind = "login" if path == LOGIN_PATH else "register"
            checks = [(f"{kind}_ip", client.ip)]
            email = email_of(body)
            if email is not None:
                checks.append((f"{kind}_email", email))
            await limiter.check(*checks)
        elif request.method == "POST" and path == REFRESH_PATH:
            await limiter.check(("refresh_ip", client.ip))
    else:
        # early rejection: a request without a valid token never reaches a service
        principal = current_principal(request)
        ctx.revoked.check(principal)
        if request.method == "POST" and path in SEND_PATHS:
            await limiter.check(("send_account", principal.account_id))
    if body is None:
        check_declared_length(request, body_limit)
    try:
        return await proxy.forward(service, request, client, body, body_limit)
    except PayloadTooLarge:
        raise RequestBodyTooLarge(body_limit) from None
