"""What the messaging endpoints and consumers share: one context, built by the
lifespan (``clarin_messaging.main``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

import asyncpg
from fastapi import Depends
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore
from starlette.requests import HTTPConnection

from clarin_common.app import service_context
from clarin_common.commands import DeviceCommands
from clarin_common.errors import ServiceUnavailable
from clarin_common.nats import PullConsumer
from clarin_common.outbox import Outbox
from clarin_common.users import UserDirectory
from clarin_messaging.devices_client import DevicesClient
from clarin_messaging.media_store import MediaStore
from clarin_messaging.settings import MessagingSettings


@dataclass(frozen=True)
class MessagingContext:
    settings: MessagingSettings
    pool: asyncpg.Pool
    nc: NatsClient
    js: JetStreamContext
    # the files we keep, and the ``wa_media`` object store where workers and we
    # exchange media bytes
    store: MediaStore
    objects: ObjectStore
    # is a device the caller's (asked with the caller's token)
    devices: DevicesClient
    # who is in an account (assignees), as auth knows it
    user_directory: UserDirectory
    # commands to the worker that holds a device (wa.cmd.{device_id})
    commands: DeviceCommands
    # every event announcing a committed change, and queued sends
    outbox: Outbox
    # the consumers' chat writes take turns in this process (lock order across
    # replicas is kept by the statements themselves)
    db_turn: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    # the running consumers (the lifespan fills it once they are built on this context)
    consumers: list[PullConsumer] = field(default_factory=list, repr=False)


def messaging_context(connection: HTTPConnection) -> MessagingContext:
    """The context; 503 while the service starts or stops or NATS is away."""
    ctx = service_context(connection.app, MessagingContext)
    if not ctx.nc.is_connected:
        raise ServiceUnavailable("Message bus unavailable")
    return ctx


MessagingCtx = Annotated[MessagingContext, Depends(messaging_context)]
