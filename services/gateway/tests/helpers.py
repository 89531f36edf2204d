"""Typed helpers of the gateway tests: fake upstream services (tiny FastAPI apps on
real ports that echo what reached them) and the running gateway in front."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel

from clarin_common.app import service_context
from clarin_gateway.deps import GatewayContext

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CHUNK = 64 * 1024


@dataclass
class Upstream:
    name: str
    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)
    openapi_fetches: int = 0
    upload_started: asyncio.Event = field(default_factory=asyncio.Event)
    download_release: asyncio.Event = field(default_factory=asyncio.Event)
    slow_release: asyncio.Event = field(default_factory=asyncio.Event)
    download_size: int = 0
    # bytes of the last upload that reached the service, also when it was cut off
    upload_received: int = 0

    def reset(self) -> None:
        self.upload_received = 0
        self.seen.clear()
        self.openapi_fetches = 0
        self.upload_started = asyncio.Event()
        self.download_release = asyncio.Event()
        self.slow_release.set()  # whatever still waits answers now
        self.slow_release = asyncio.Event()


class Shared(BaseModel):
    """Defined identically by every fake: merged once."""

    x: int


class AuthModels:
    class Thing(BaseModel):
        auth_field: str


class LeadsModels:
    """A schema named like one of auth's, with another shape: renamed when merged."""

    class Thing(BaseModel):
        leads_field: int

    class Holder(BaseModel):
        thing: LeadsModels.Thing


def fake_service(up: Upstream) -> FastAPI:
    app = FastAPI(title=f"fake {up.name}")

    @app.middleware("http")
    async def count_openapi(request: Request, call_next: Callable[..., Any]) -> Any:
        if request.url.path == "/openapi.json":
            up.openapi_fetches += 1
        return await call_next(request)

    async def record(request: Request) -> dict[str, Any]:
        body = await request.body()
        entry = {
            "service": up.name,
            "method": request.method,
            "path": request.url.path,
            "raw_path": request.scope["raw_path"].decode(),
            "query": request.url.query,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        up.seen.append(entry)
        return entry

    @app.get("/internal/not-public")
    async def internal() -> dict[str, str]:
        return {"ok": "yes"}

    if up.name == "auth":

        @app.post("/api/users", status_code=201)
        async def create_thing(thing: AuthModels.Thing) -> AuthModels.Thing:
            return thing

        @app.post("/api/users/shared")
        async def use_shared(shared: Shared) -> Shared:
            return shared

        @app.post("/api/auth/login")
        async def login(request: Request) -> JSONResponse:
            entry = await record(request)
            if '"password": "right"' in entry["body"] or '"password":"right"' in entry["body"]:
                return JSONResponse({"access_token": "t", "echo": entry})
            return JSONResponse(
                {
                    "error": {
                        "code": "invalid_credentials",
                        "message": "Email or password is wrong",
                        "details": None,
                    }
                },
                status_code=401,
            )

    if up.name == "leads":

        @app.post("/api/leads/typed", status_code=201)
        async def create_typed(holder: LeadsModels.Holder) -> LeadsModels.Holder:
            return holder

        @app.post("/api/leads/shared")
        async def use_shared_too(shared: Shared) -> Shared:
            return shared

    if up.name == "messaging":

        @app.post("/api/media/upload")
        async def upload(request: Request) -> dict[str, Any]:
            digest = hashlib.sha256()
            size = 0
            up.upload_received = 0
            async for chunk in request.stream():
                if chunk and not up.upload_started.is_set():
                    up.upload_started.set()
                digest.update(chunk)
                size += len(chunk)
                up.upload_received = size
            return {"size": size, "sha256": digest.hexdigest()}

        @app.get("/api/media/big")
        async def big() -> StreamingResponse:
            async def body() -> AsyncIterator[bytes]:
                yield b"\x01" * CHUNK
                # the rest only once the client got the first chunk: a gateway that
                # buffered the whole response would wait here forever
                await asyncio.wait_for(up.download_release.wait(), 10)
                for i in range((up.download_size // CHUNK) - 1):
                    yield bytes([i % 251]) * CHUNK

            return StreamingResponse(
                body(), media_type="application/octet-stream", headers={"X-Media": "yes"}
            )

        @app.get("/api/chats/missing")
        async def missing() -> JSONResponse:
            return JSONResponse(
                {"error": {"code": "not_found", "message": "Chat not found", "details": None}},
                status_code=404,
                headers={"X-Upstream-Error": "1"},
            )

        @app.get("/api/chats/redirect")
        async def redirect(request: Request) -> JSONResponse:
            # what FastAPI's redirect_slashes does: an absolute URL of the service itself
            return JSONResponse(
                {}, status_code=307, headers={"Location": f"{up.url}/api/chats?x=1"}
            )

        @app.get("/api/chats/page")
        async def page() -> HTMLResponse:
            return HTMLResponse("<script>alert(1)</script>")

        @app.get("/api/chats/slow")
        async def slow() -> dict[str, str]:
            # answers only once released: later than any gateway timeout a test sets
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(up.slow_release.wait(), 30)
            return {"late": "yes"}

    @app.api_route("/api/{rest:path}", methods=ALL_METHODS, include_in_schema=False)
    async def echo(request: Request) -> JSONResponse:
        entry = await record(request)
        return JSONResponse(
            entry,
            status_code=201 if request.method == "PUT" else 200,
            headers={"X-Upstream": up.name, "Set-Cookie": "a=b"},
        )

    return app


@dataclass
class Gateway:
    url: str
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws"

    @property
    def context(self) -> GatewayContext:
        return service_context(self.app, GatewayContext)


GatewayFactory = Callable[..., contextlib.AbstractAsyncContextManager[Gateway]]
