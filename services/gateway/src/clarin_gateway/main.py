"""The gateway: the one public port (API forwarding, WebSocket hub, web app)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import prometheus_client
import structlog
from fastapi import APIRouter, FastAPI, Request
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from clarin_common.app import Resources, create_service_app, serve
from clarin_common.auth_events import SessionRevoked
from clarin_gateway import logfilter
from clarin_gateway.clientip import TrustedProxies
from clarin_gateway.guard import PathGuard, SecurityHeaders
from clarin_gateway.openapi import OpenApiCache
from clarin_gateway.proxy.endpoints import router as api_router
from clarin_gateway.proxy.forward import Proxy
from clarin_gateway.ratelimit import Limiter
from clarin_gateway.revocations import RevocationList, follow
from clarin_gateway.settings import GatewaySettings
from clarin_gateway.webapp import WebApp
from clarin_gateway.ws.endpoints import router as ws_router
from clarin_gateway.ws.hub import Hub

webapp_router = APIRouter()


@webapp_router.api_route("/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def web_app(request: Request) -> Response:
    webapp: WebApp = request.app.state.webapp
    return await webapp.serve(request)


log = structlog.get_logger(__name__)

# FastAPI's own docs would describe the gateway, not the API; the merged
# document lives at /api/openapi.json and these paths belong to the web app.
# /metrics is served on GATEWAY_METRICS_PORT only, never on the public port.
_NOT_PUBLIC_PATHS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/metrics"}


def _public_route(route: BaseRoute) -> bool:
    return not (isinstance(route, Route) and route.path in _NOT_PUBLIC_PATHS)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    logfilter.install()

    def _upstream_ready(proxy: Proxy, url: str) -> Callable[[], Awaitable[None]]:
        async def probe() -> None:
            resp = await proxy.client.get(f"{url.rstrip('/')}/readyz", timeout=2)
            resp.raise_for_status()

        return probe

    async def on_startup(app: FastAPI, res: Resources) -> None:
        assert res.nc is not None
        proxy = Proxy(settings)
        app.state.proxy = proxy
        app.state.limiter = Limiter(settings)
        app.state.openapi = OpenApiCache(
            proxy.client,
            settings.upstreams(),
            ttl=settings.openapi_cache_seconds,
            timeout=settings.openapi_fetch_timeout,
        )
        hub = Hub(res.nc)
        app.state.hub = hub

        async def close_revoked(account_id: str, event: SessionRevoked) -> None:
            hub.revoke(account_id, event)

        assert res.js is not None
        res.extras["revocations"] = await follow(res.js, app.state.revoked, close_revoked)
        for name, url in settings.upstreams().items():
            res.informational_checks[name] = _upstream_ready(proxy, url)

    async def on_shutdown(app: FastAPI, res: Resources) -> None:
        revocations = res.extras.get("revocations")
        if revocations is not None:
            with contextlib.suppress(Exception):
                await revocations.unsubscribe()
        hub: Hub | None = getattr(app.state, "hub", None)
        if hub is not None:
            await hub.close()
        proxy: Proxy | None = getattr(app.state, "proxy", None)
        if proxy is not None:
            await proxy.aclose()
        limiter: Limiter | None = getattr(app.state, "limiter", None)
        if limiter is not None:
            await limiter.aclose()

    app = create_service_app(
        settings,
        title="Clarin gateway",
        use_nats=True,
        cors=True,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )
    app.router.routes[:] = [r for r in app.router.routes if _public_route(r)]
    # just inside the request id (so a refused path still has one), before CORS,
    # metrics and routing: every later step sees the normalised path
    app.user_middleware.insert(1, Middleware(PathGuard))
    app.user_middleware.insert(1, Middleware(SecurityHeaders))
    app.state.trusted_proxies = TrustedProxies(settings.trusted_networks)
    app.state.revoked = RevocationList()
    app.state.webapp = WebApp(settings.static_path)
    app.include_router(api_router)
    app.include_router(ws_router)
    # last: it answers every other GET
    app.include_router(webapp_router)
    return app


def start_metrics_server(settings: GatewaySettings) -> None:
    if settings.metrics_port is None:
        return
    prometheus_client.start_http_server(settings.metrics_port, addr=settings.metrics_host)
    log.info("metrics_server_started", host=settings.metrics_host, port=settings.metrics_port)


def run() -> None:
    settings = GatewaySettings()
    start_metrics_server(settings)
    serve(create_app(settings), settings.host, settings.port)
