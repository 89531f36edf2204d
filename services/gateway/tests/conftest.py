"""Fake upstream services (tiny FastAPI apps on real ports) and a gateway in front.

The fakes stand in for auth/devices/messaging/leads: they echo what reached them
so that tests can see exactly what the gateway forwarded.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clarin_devkit.testing import free_port, live_server
from clarin_gateway.main import create_app
from clarin_gateway.settings import GatewaySettings
from services.gateway.tests.helpers import Gateway, GatewayFactory, Upstream, fake_service


@pytest.fixture(scope="session")
async def upstreams() -> AsyncIterator[dict[str, Upstream]]:
    ups = {
        name: Upstream(name)
        for name in ("auth", "devices", "messaging", "leads", "webhooks", "campaigns")
    }
    async with contextlib.AsyncExitStack() as stack:
        for up in ups.values():
            up.url = await stack.enter_async_context(live_server(fake_service(up)))
        yield ups


@pytest.fixture
def gateway_factory(
    clean_state: None, upstreams: dict[str, Upstream], tmp_path: Path
) -> GatewayFactory:
    for up in upstreams.values():
        up.reset()

    @contextlib.asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[Gateway]:
        values: dict[str, Any] = {
            "auth_url": upstreams["auth"].url,
            "devices_url": upstreams["devices"].url,
            "messaging_url": upstreams["messaging"].url,
            "leads_url": upstreams["leads"].url,
            "webhooks_url": upstreams["webhooks"].url,
            "campaigns_url": upstreams["campaigns"].url,
            "static_dir": str(tmp_path / "no-web-app"),
        }
        values.update(overrides)
        app = create_app(GatewaySettings(**values))
        async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
            yield Gateway(url=url, app=app, client=client)

    return make


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> AsyncIterator[Gateway]:
    async with gateway_factory() as gw:
        yield gw


@pytest.fixture
def dead_url() -> str:
    """A port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"
