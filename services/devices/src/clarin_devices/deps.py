"""What the devices endpoints get from the running app: one context, built by the
lifespan (``clarin_devices.main``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends
from nats.aio.client import Client as NatsClient

from clarin_common.app import context_dependency
from clarin_common.commands import DeviceCommands
from clarin_common.outbox import Outbox
from clarin_devices.devices.holders import HolderCheck
from clarin_devices.settings import DevicesSettings


@dataclass(frozen=True)
class DevicesContext:
    settings: DevicesSettings
    pool: asyncpg.Pool
    # wakes the workers' reconcile loops (core NATS, best effort)
    nc: NatsClient
    outbox: Outbox
    # wa.cmd.{device} to the worker that holds the device
    commands: DeviceCommands
    # shows `connecting` for the devices of workers whose heartbeat is gone
    holders: HolderCheck


DevicesCtx = Annotated[DevicesContext, Depends(context_dependency(DevicesContext))]
