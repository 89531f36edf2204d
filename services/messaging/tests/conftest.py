"""Fixtures of the messaging tests: the service on the real servers and a fake
devices and auth service; the helpers themselves are in :mod:`helpers`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient

from clarin_devkit.testing import live_server
from services.messaging.tests.helpers import Service, fake_devices_app, service


@pytest.fixture(scope="session")
async def devices_url() -> AsyncIterator[str]:
    async with live_server(fake_devices_app()) as url:
        yield url


@pytest.fixture
async def svc(
    clean_state: None, nats_client: NatsClient, tmp_path: Path, devices_url: str
) -> AsyncIterator[Service]:
    async with service(nats_client, tmp_path, devices_url) as s:
        yield s
