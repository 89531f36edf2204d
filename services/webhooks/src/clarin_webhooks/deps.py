"""What the webhooks endpoints get from the running app: one context, built by the
lifespan (``clarin_webhooks.main``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends

from clarin_common.app import context_dependency
from clarin_webhooks.crypto import SecretBox
from clarin_webhooks.delivery.consumer import EventConsumer
from clarin_webhooks.delivery.dispatcher import Dispatcher
from clarin_webhooks.delivery.targets import TargetPolicy
from clarin_webhooks.settings import WebhooksSettings


@dataclass(frozen=True)
class WebhooksContext:
    settings: WebhooksSettings
    pool: asyncpg.Pool
    # where a webhook may point (checked on create and on a new url)
    policy: TargetPolicy
    # encrypts the signing secrets at rest
    box: SecretBox
    # sends due deliveries; woken by a redelivery
    dispatcher: Dispatcher
    # APP_EVENTS into delivery rows
    consumer: EventConsumer


WebhooksCtx = Annotated[WebhooksContext, Depends(context_dependency(WebhooksContext))]
