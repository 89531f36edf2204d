"""What the endpoints need from the running app, as ``Annotated`` dependencies."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request

from clarin_common.auth import Principal
from clarin_common.errors import Unauthorized
from clarin_webhooks.crypto import SecretBox
from clarin_webhooks.delivery.dispatcher import Dispatcher
from clarin_webhooks.delivery.targets import TargetPolicy
from clarin_webhooks.settings import WebhooksSettings


def account_uuid(principal: Principal) -> str:
    """The token's account id; every tenant row is keyed by it (a uuid)."""
    try:
        return str(uuid.UUID(principal.account_id))
    except ValueError as exc:
        raise Unauthorized("Invalid access token", code="invalid_token") from exc


def _policy(request: Request) -> TargetPolicy:
    policy: TargetPolicy = request.app.state.target_policy
    return policy


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.secret_box
    return box


def _dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


def _settings(request: Request) -> WebhooksSettings:
    settings: WebhooksSettings = request.app.state.settings
    return settings


Policy = Annotated[TargetPolicy, Depends(_policy)]
Box = Annotated[SecretBox, Depends(_box)]
DispatcherDep = Annotated[Dispatcher, Depends(_dispatcher)]
Settings = Annotated[WebhooksSettings, Depends(_settings)]
