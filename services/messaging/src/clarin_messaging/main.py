"""The messaging service: chats (conversations, notes), messages, media, quick
replies and search; the wa.evt and lead consumers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from clarin_common.app import Resources, create_service_app, serve
from clarin_common.commands import DeviceCommands
from clarin_common.errors import error_response
from clarin_common.nats import ensure_object_store
from clarin_common.outbox import Outbox
from clarin_common.users import UserDirectory
from clarin_messaging.chats.endpoints import router as chats_router
from clarin_messaging.consumers import (
    history_events_consumer,
    lead_events_consumer,
    wa_events_consumer,
)
from clarin_messaging.deps import MessagingContext
from clarin_messaging.devices_client import DevicesClient
from clarin_messaging.media_store import LocalMediaStore
from clarin_messaging.messages.endpoints import router as messages_router
from clarin_messaging.messages.service import ServiceSends
from clarin_messaging.quick_replies.endpoints import router as quick_replies_router
from clarin_messaging.search.endpoints import router as search_router
from clarin_messaging.settings import MessagingSettings

log = structlog.get_logger(__name__)

MIGRATIONS = Path(__file__).parents[2] / "migrations"
UPLOAD_PATH = "/api/messages/send/media"
# multipart boundaries and the small fields around the file
_MULTIPART_OVERHEAD = 64 * 1024
# allocations between two collections of the youngest generation (Python's default: 700)
GC_GEN0_THRESHOLD = 50_000


class UploadLimit:
    """Refuse an oversized upload from its Content-Length, before reading it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit + _MULTIPART_OVERHEAD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == UPLOAD_PATH:
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                    response = error_response(
                        413, "payload_too_large", "Upload too large", {"limit": self.limit}
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def create_app(settings: MessagingSettings | None = None) -> FastAPI:
    settings = settings or MessagingSettings()

    @asynccontextmanager
    async def context(res: Resources) -> AsyncIterator[MessagingContext]:
        assert res.pool is not None and res.nc is not None and res.js is not None
        async with (
            UserDirectory(settings.auth_url, settings.auth_timeout) as users,
            DevicesClient(settings.devices_url, settings.devices_timeout) as devices,
            Outbox(res.pool, res.js, settings.outbox_relay_interval, "messaging") as outbox,
        ):
            ctx = MessagingContext(
                settings=settings,
                pool=res.pool,
                nc=res.nc,
                js=res.js,
                store=LocalMediaStore(settings.media_dir),
                objects=await ensure_object_store(res.js),
                devices=devices,
                user_directory=users,
                commands=DeviceCommands(res.nc, settings.command_timeout),
                outbox=outbox,
            )
            service_sends = ServiceSends(ctx)
            await service_sends.start()
            if settings.consumers_enabled:
                ctx.consumers.extend(
                    [
                        wa_events_consumer(ctx),
                        lead_events_consumer(ctx),
                        history_events_consumer(ctx),
                    ]
                )
            try:
                for consumer in ctx.consumers:
                    await consumer.start()
                # a batch of 1,000 events allocates some 10^5 short-lived objects:
                # what startup built (modules, models, pools) leaves the collector's
                # scans, and the youngest generation is collected less often
                gc.freeze()
                gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
                yield ctx
            finally:
                await service_sends.stop()
                for consumer in ctx.consumers:
                    # finishes the batch in hand (committed and acked), then stops
                    await consumer.stop()

    app = create_service_app(
        settings,
        title="Clarin messaging",
        schema="messaging",
        migrations_dir=MIGRATIONS,
        routers=[chats_router, messages_router, search_router, quick_replies_router],
        context=context,
    )
    app.add_middleware(UploadLimit, limit=settings.max_upload_bytes)
    return app


def run() -> None:
    settings = MessagingSettings()
    serve(create_app(settings), settings.host, settings.port)
