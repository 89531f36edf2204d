"""What the leads endpoints get from the running app: one context, built by the
lifespan (``clarin_leads.main``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends

from clarin_common.app import context_dependency
from clarin_common.outbox import Outbox
from clarin_common.users import UserDirectory
from clarin_leads.consumers import LeadsConsumer
from clarin_leads.settings import LeadsSettings


@dataclass(frozen=True)
class LeadsContext:
    settings: LeadsSettings
    pool: asyncpg.Pool
    outbox: Outbox
    # who is in an account (assignees), as auth knows it
    user_directory: UserDirectory
    consumer: LeadsConsumer


LeadsCtx = Annotated[LeadsContext, Depends(context_dependency(LeadsContext))]
