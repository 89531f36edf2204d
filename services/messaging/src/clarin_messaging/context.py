"""What the endpoints and consumers share, built once by the lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from clarin_common.errors import ServiceUnavailable
from clarin_common.events import Envelope
from clarin_common.nats import encode, ensure_object_store, publish_events
from clarin_common.outbox import Outbox
from clarin_messaging.devices_client import DevicesClient
from clarin_messaging.media_store import MediaStore
from clarin_messaging.settings import MessagingSettings


@dataclass
class Messaging:
    settings: MessagingSettings
    pool: asyncpg.Pool
    nc: NatsClient
    js: JetStreamContext
    store: MediaStore
    devices: DevicesClient
    # queued sends (and, later, the API's events) published after their commit
    outbox: Outbox
    # the consumers' chat writes take turns in this process (lock order across
    # replicas is kept by the statements themselves)
    db_turn: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _objects: ObjectStore | None = field(default=None, repr=False)

    async def objects(self) -> ObjectStore:
        """The ``wa_media`` object store where workers and we exchange media bytes."""
        if self._objects is None:
            self._objects = await ensure_object_store(self.js)
        return self._objects

    async def publish(self, events: list[tuple[str, Envelope[Any]]]) -> None:
        """Publish and wait for every stream ack (the API's own events)."""
        if events:
            await publish_events(self.js, events)

    async def publish_fast(self, events: list[tuple[str, Envelope[Any]]]) -> None:
        """Publish a committed batch's events as plain NATS messages into the stream.

        The APP_EVENTS stream stores them as it stores any ``app.>`` message (and
        still drops a repeat by ``Nats-Msg-Id``); what is skipped is waiting for
        a stream ack per event, which costs the consumer a third of its CPU. The
        wait would buy nothing here: the WA event is acked after this, and a
        redelivered one is a duplicate that publishes nothing again either way.
        """
        if not events:
            return
        for subject, envelope in events:
            await self.nc.publish(subject, encode(envelope), headers={"Nats-Msg-Id": envelope.id})
        await self.nc.flush()


def get_messaging(request: Request) -> Messaging:
    ctx: Messaging | None = request.app.state.resources.extras.get("messaging")
    if ctx is None or not ctx.nc.is_connected:
        raise ServiceUnavailable("Message bus unavailable")
    return ctx


MessagingDep = Annotated[Messaging, Depends(get_messaging)]
