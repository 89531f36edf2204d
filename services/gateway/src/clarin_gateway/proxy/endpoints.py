"""``/api/*``: the merged API docs and the forwarding to the owning service."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.responses import Response

from clarin_common.auth import current_principal
from clarin_common.errors import NotFound, PayloadTooLarge
from clarin_gateway.openapi import OpenApiCache, docs_page
from clarin_gateway.proxy.forward import Proxy
from clarin_gateway.proxy.routing import (
    LOGIN_PATH,
    REFRESH_PATH,
    REGISTER_PATH,
    SEND_PATHS,
    is_public,
    service_for,
)
from clarin_gateway.ratelimit import Limiter

router = APIRouter()

OPENAPI_PATH = "/api/openapi.json"
MAX_AUTH_BODY = 64 * 1024
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@router.get(OPENAPI_PATH, include_in_schema=False)
async def merged_openapi(request: Request) -> JSONResponse:
    cache: OpenApiCache = request.app.state.openapi
    return JSONResponse(await cache.document(), headers={"Cache-Control": "no-cache"})


@router.get("/api/docs", include_in_schema=False)
async def api_docs(request: Request) -> HTMLResponse:
    cache: OpenApiCache = request.app.state.openapi
    return HTMLResponse(docs_page(await cache.document(), OPENAPI_PATH))


def client_ip(request: Request) -> str:
    # uvicorn already replaced this with X-Forwarded-For when the peer is a trusted proxy
    return request.client.host if request.client else "unknown"


async def read_small_body(request: Request, limit: int = MAX_AUTH_BODY) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("Request body too large")
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
async def forward(request: Request) -> Response:
    path = request.url.path
    service = service_for(path)
    if service is None:
        raise NotFound(f"No API route {path}")
    limiter: Limiter = request.app.state.limiter
    proxy: Proxy = request.app.state.proxy
    route = path.rstrip("/")
    body: bytes | None = None
    if is_public(path):
        if request.method == "POST" and route in (LOGIN_PATH, REGISTER_PATH):
            body = await read_small_body(request)
            kind = "login" if route == LOGIN_PATH else "register"
            checks = [(f"{kind}_ip", client_ip(request))]
            email = email_of(body)
            if email is not None:
                checks.append((f"{kind}_email", email))
            await limiter.check(*checks)
        elif request.method == "POST" and route == REFRESH_PATH:
            await limiter.check(("refresh_ip", client_ip(request)))
    else:
        # early rejection: a request without a valid token never reaches a service
        principal = current_principal(request)
        if request.method == "POST" and route in SEND_PATHS:
            await limiter.check(("send_account", principal.account_id))
    return await proxy.forward(service, request, body)
