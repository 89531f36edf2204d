"""The gateway: the one public port (API forwarding, WebSocket hub, web app)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import prometheus_client
import structlog
from fastapi import APIRouter, FastAPI, Request
from nats.js import JetStreamContext
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from clarin_common.app import Resources, create_service_app, serve
from clarin_common.auth_events import SessionRevoked
from clarin_gateway import logfilter
from clarin_gateway.clientip import TrustedProxies
from clarin_gateway.deps import GatewayContext, GatewayCtx
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
async def web_app(request: Request, ctx: GatewayCtx) -> Response:
    return await ctx.webapp.serve(request)


log = structlog.get_logger(__name__)

# FastAPI's own docs would describe the gateway, not the API; the merged
# document lives at /api/openapi.json and these paths belong to the web app.
# /metrics is served on GATEWAY_METRICS_PORT only, never on the public port.
_NOT_PUBLIC_PATHS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/metrics"}


def _public_route(route: BaseRoute) -> bool:
    return not (isinstance(route, Route) and route.path in _NOT_PUBLIC_PATHS)


async def _unsubscribe(sub: JetStreamContext.PushSubscription) -> None:
    with contextlib.suppress(Exception):  # already gone with the connection
        await sub.unsubscribe()


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    logfilter.install()

    def _upstream_ready(proxy: Proxy, url: str) -> Callable[[], Awaitable[None]]:
        async def probe() -> None:
            resp = await proxy.client.get(f"{url.rstrip('/')}/readyz", timeout=2)
            resp.raise_for_status()

        return probe

    @contextlib.asynccontextmanager
    async def context(res: Resources) -> AsyncIterator[GatewayContext]:
        assert res.nc is not None and res.js is not None
        async with contextlib.AsyncExitStack() as stack:
            proxy = Proxy(settings)
            stack.push_async_callback(proxy.aclose)
            limiter = Limiter(settings)
            stack.push_async_callback(limiter.aclose)
            hub = Hub(res.nc)
            stack.push_async_callback(hub.close)
            revoked = RevocationList()

            async def close_revoked(account_id: str, event: SessionRevoked) -> None:
                hub.revoke(account_id, event)

            following = await follow(res.js, revoked, close_revoked)
            stack.push_async_callback(_unsubscribe, following)
            for name, url in settings.upstreams().items():
                res.informational_checks[name] = _upstream_ready(proxy, url)
            yield GatewayContext(
                settings=settings,
                proxy=proxy,
                limiter=limiter,
                openapi=OpenApiCache(
                    proxy.client,
                    settings.upstreams(),
                    ttl=settings.openapi_cache_seconds,
                    timeout=settings.openapi_fetch_timeout,
                ),
                hub=hub,
                revoked=revoked,
                trusted_proxies=TrustedProxies(settings.trusted_networks),
                webapp=WebApp(settings.static_path),
            )

    app = create_service_app(
        settings,
        title="Clarin gateway",
        use_nats=True,
        cors=True,
        context=context,
    )
    app.router.routes[:] = [r for r in app.router.routes if _public_route(r)]
    # just inside the request id (so a refused path still has one), before CORS,
    # metrics and routing: every later step sees the normalised path
    app.user_middleware.insert(1, Middleware(PathGuard))
    app.user_middleware.insert(1, Middleware(SecurityHeaders))
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
