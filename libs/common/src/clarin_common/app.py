"""``create_service_app()``: the lifespan, health, metrics and errors every service shares.

A service's own collaborators (clients, outbox, consumers, …) live in one typed
context object that its ``context`` factory builds once the common connections
are open, and tears down before they close; endpoints receive it through one
``Annotated`` dependency made with :func:`context_dependency`
(docs/SERVICE_RECIPE.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import structlog
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from redis.asyncio import Redis
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarin_common import db as dbmod
from clarin_common import nats as natsmod
from clarin_common.auth import TokenVerifier
from clarin_common.errors import ServiceUnavailable, install_error_handlers
from clarin_common.logging import RequestIdMiddleware, configure_logging
from clarin_common.redis import create_redis
from clarin_common.settings import CommonSettings

log = structlog.get_logger(__name__)

REQUESTS = Counter(
    "clarin_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
LATENCY = Histogram(
    "clarin_http_request_duration_seconds", "HTTP request latency", ["service", "method", "route"]
)


@dataclass
class Resources:
    """Connections opened by the lifespan, reachable from ``app.state.resources``."""

    settings: CommonSettings
    pool: asyncpg.Pool | None = None
    nc: NatsClient | None = None
    js: JetStreamContext | None = None
    redis: Redis | None = None
    # the service's typed context (``create_service_app(context=…)``)
    context: Any = None
    # where services that predate the context keep things (messaging)
    extras: dict[str, Any] = field(default_factory=dict)
    # reported by /readyz under "services" without deciding readiness (the gateway
    # shows its upstreams there but stays ready while one of them is down)
    informational_checks: dict[str, Callable[[], Awaitable[Any]]] = field(default_factory=dict)


Hook = Callable[[FastAPI, Resources], Awaitable[None]]
# builds the service's context once pool/NATS/Redis are open; leaving it stops
# what it started (consumers first, then clients)
ContextFactory = Callable[[Resources], AbstractAsyncContextManager[Any]]
C = TypeVar("C")


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUESTS.labels(self.service, scope["method"], template, str(status)).inc()
            LATENCY.labels(self.service, scope["method"], template).observe(
                time.perf_counter() - started
            )


def create_service_app(
    settings: CommonSettings,
    *,
    title: str,
    schema: str | None = None,
    migrations_dir: Path | None = None,
    use_nats: bool = True,
    use_redis: bool = False,
    routers: Sequence[APIRouter] = (),
    context: ContextFactory | None = None,
    on_startup: Hook | None = None,
    on_shutdown: Hook | None = None,
    cors: bool = False,
) -> FastAPI:
    """A FastAPI app with the shared lifespan.

    The lifespan opens (and closes) the PostgreSQL pool (applying the service's
    migrations first), NATS with the JetStream streams, and Redis; then enters
    ``context`` (its value becomes ``Resources.context``) and runs
    ``on_startup``. ``/healthz``, ``/readyz`` and ``/metrics`` are always there.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.json_logs, settings.service_name)
        res = Resources(settings=settings)
        app.state.resources = res
        stack = AsyncExitStack()
        try:
            if schema is not None:
                if migrations_dir is not None:
                    await dbmod.migrate(settings.database_url, schema, migrations_dir)
                res.pool = await dbmod.create_pool(
                    settings.database_url,
                    schema,
                    min_size=settings.db_pool_min,
                    max_size=settings.db_pool_max,
                )
            if use_nats:
                res.nc = await natsmod.connect(
                    settings.nats_url,
                    name=settings.service_name,
                    user=settings.nats_user,
                    password=(
                        settings.nats_password.get_secret_value()
                        if settings.nats_password
                        else None
                    ),
                )
                res.js = res.nc.jetstream()
                await natsmod.ensure_streams(res.js)
            if use_redis:
                res.redis = create_redis(settings.redis_url)
            if context is not None:
                res.context = await stack.enter_async_context(context(res))
            if on_startup is not None:
                await on_startup(app, res)
            log.info("service_started", title=title)
            yield
        finally:
            log.info("service_stopping", title=title)
            if on_shutdown is not None:
                try:
                    await on_shutdown(app, res)
                except Exception:
                    log.exception("shutdown_hook_failed")
            try:
                await stack.aclose()
            except Exception:
                log.exception("context_shutdown_failed")
            res.context = None
            if res.nc is not None and not res.nc.is_closed:
                try:
                    await asyncio.wait_for(res.nc.drain(), 10)
                except Exception:
                    await res.nc.close()
            if res.redis is not None:
                await res.redis.aclose()
            if res.pool is not None:
                await res.pool.close()

    app = FastAPI(title=title, lifespan=lifespan)
    app.state.settings = settings
    app.state.token_verifier = TokenVerifier(settings.jwt_public_key, settings.jwt_issuer)
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        res: Resources | None = getattr(request.app.state, "resources", None)
        checks = await readiness(res) if res else {"lifespan": "not started"}
        ok = all(v == "ok" for v in checks.values())
        body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "checks": checks}
        if res is not None and res.informational_checks:
            body["services"] = await _run_checks(res.informational_checks)
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(MetricsMiddleware, service=settings.service_name)
    if cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-Id", "Retry-After"],
        )
    app.add_middleware(RequestIdMiddleware)
    return app


async def _run_checks(probes: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, str]:
    checks: dict[str, str] = {}

    async def check(name: str, probe: Callable[[], Awaitable[Any]]) -> None:
        try:
            await asyncio.wait_for(probe(), 2)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}"

    await asyncio.gather(*(check(name, probe) for name, probe in probes.items()))
    return dict(sorted(checks.items()))


async def readiness(res: Resources) -> dict[str, str]:
    probes: dict[str, Callable[[], Awaitable[Any]]] = {}
    if res.pool is not None:
        pool = res.pool
        probes["postgres"] = lambda: pool.fetchval("SELECT 1")
    if res.nc is not None:
        nc = res.nc

        async def nats_probe() -> None:
            if not nc.is_connected:
                raise ConnectionError("disconnected")
            await nc.flush(timeout=2)

        probes["nats"] = nats_probe
    if res.redis is not None:
        probes["redis"] = res.redis.ping
    return await _run_checks(probes)


# ---- dependencies --------------------------------------------------------------


def service_context(app: FastAPI, kind: type[C]) -> C:
    """The service's context object (503 while the service starts or stops)."""
    resources = getattr(app.state, "resources", None)
    context = getattr(resources, "context", None)
    if not isinstance(context, kind):
        raise ServiceUnavailable("The service is starting or stopping")
    return context


def context_dependency(kind: type[C]) -> Callable[[HTTPConnection], C]:
    """A FastAPI dependency that hands endpoints the service's ``kind`` context:
    ``Ctx = Annotated[LeadsContext, Depends(context_dependency(LeadsContext))]``."""

    def dependency(connection: HTTPConnection) -> C:  # requests and WebSockets
        return service_context(connection.app, kind)

    return dependency


def _resources(request: Request) -> Resources:
    res: Resources = request.app.state.resources
    return res


def get_pool(request: Request) -> asyncpg.Pool:
    pool = _resources(request).pool
    if pool is None:
        raise ServiceUnavailable("Database not configured")
    return pool


def get_nats(request: Request) -> NatsClient:
    nc = _resources(request).nc
    if nc is None or not nc.is_connected:
        raise ServiceUnavailable("Message bus unavailable")
    return nc


def get_js(request: Request) -> JetStreamContext:
    js = _resources(request).js
    if js is None:
        raise ServiceUnavailable("Message bus unavailable")
    return js


def get_redis(request: Request) -> Redis:
    redis = _resources(request).redis
    if redis is None:
        raise ServiceUnavailable("Cache unavailable")
    return redis


DbPool = Annotated[asyncpg.Pool, Depends(get_pool)]
Nats = Annotated[NatsClient, Depends(get_nats)]
JetStream = Annotated[JetStreamContext, Depends(get_js)]
RedisClient = Annotated[Redis, Depends(get_redis)]


def serve(app: FastAPI | str, host: str, port: int, *, factory: bool = False) -> None:
    """Run a service with uvicorn (graceful shutdown on SIGTERM)."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        factory=factory,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=20,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        # frames are small JSON; compressing each cost the gateway ~18 % of its CPU
        ws_per_message_deflate=False,
        # X-Forwarded-For is read by the gateway from its configured trusted proxies
        # only (GATEWAY_TRUSTED_PROXIES); uvicorn's would trust any local peer
        proxy_headers=False,
    )
