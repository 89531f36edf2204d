"""What the gateway's endpoints get from the running app: one context, built by
the lifespan (``clarin_gateway.main``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from clarin_common.app import context_dependency
from clarin_gateway.clientip import TrustedProxies
from clarin_gateway.openapi import OpenApiCache
from clarin_gateway.proxy.forward import Proxy
from clarin_gateway.ratelimit import Limiter
from clarin_gateway.revocations import RevocationList
from clarin_gateway.settings import GatewaySettings
from clarin_gateway.webapp import WebApp
from clarin_gateway.ws.hub import Hub


@dataclass(frozen=True)
class GatewayContext:
    settings: GatewaySettings
    # the pooled client that forwards /api/* to the services
    proxy: Proxy
    limiter: Limiter
    openapi: OpenApiCache
    # per-account NATS subscriptions fanned out to the sockets
    hub: Hub
    # access tokens that no longer count (auth's session_revoked events)
    revoked: RevocationList
    trusted_proxies: TrustedProxies
    webapp: WebApp


GatewayCtx = Annotated[GatewayContext, Depends(context_dependency(GatewayContext))]
