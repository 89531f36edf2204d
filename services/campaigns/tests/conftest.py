"""Fixtures of the campaigns tests: the app on real PostgreSQL/NATS with
stand-ins for leads, devices and messaging."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from clarin_campaigns.main import create_app
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from clarin_devkit.testing import live_server, running_app
from services.campaigns.tests.helpers import (
    FakeMessaging,
    FakeUpstreams,
    Progress,
    campaigns_settings,
)


@pytest.fixture(scope="session")
async def upstreams() -> AsyncIterator[FakeUpstreams]:
    state = FakeUpstreams()
    async with live_server(state.app()) as url:
        state.url = url
        yield state


@pytest.fixture
async def messaging(clean_state: None, nats_client: NatsClient) -> AsyncIterator[FakeMessaging]:
    fake = FakeMessaging(nats_client)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def client(
    messaging: FakeMessaging, upstreams: FakeUpstreams
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(campaigns_settings(upstreams))) as http:
        yield http


@pytest.fixture
async def progress(nats_client: NatsClient) -> AsyncIterator[Progress]:
    seen = Progress()

    async def cb(msg: Msg) -> None:
        seen.frames.append(json.loads(msg.data))

    sub = await nats_client.subscribe("app.*.campaign_progress", cb=cb)
    await nats_client.flush()
    yield seen
    await sub.unsubscribe()
