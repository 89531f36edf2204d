"""What the campaigns endpoints get from the running app: one context, built by
the lifespan (``clarin_campaigns.main``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends

from clarin_campaigns.clients import DevicesClient, LeadsClient
from clarin_campaigns.runner import Scheduler
from clarin_campaigns.settings import CampaignsSettings
from clarin_common.app import context_dependency
from clarin_common.outbox import Outbox


@dataclass(frozen=True)
class CampaignsContext:
    settings: CampaignsSettings
    pool: asyncpg.Pool
    outbox: Outbox
    leads: LeadsClient
    devices: DevicesClient
    scheduler: Scheduler


CampaignsCtx = Annotated[CampaignsContext, Depends(context_dependency(CampaignsContext))]
