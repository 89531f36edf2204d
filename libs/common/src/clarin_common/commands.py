"""Commands to the device worker that holds a device (``wa.cmd.{device_id}``).

The worker that owns a device's lease subscribes its command subject
(request/reply). Nobody subscribed ("no responders") means no worker holds a
live session of the device: the caller answers 409 ``device_not_connected`` at
once instead of waiting for a timeout.
"""

from __future__ import annotations

from typing import Any

import structlog
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import BaseModel, ValidationError

from clarin_common.errors import Conflict, DeviceNotConnected, ServiceUnavailable
from clarin_common.events import CommandReply, wa_command_subject

log = structlog.get_logger(__name__)


class DeviceTimedOut(ServiceUnavailable):
    """The owning worker took the command but did not answer in time."""

    message = "The device worker did not answer in time"


class DeviceAnswerUnreadable(ServiceUnavailable):
    """The worker answered something that is not a command reply."""

    message = "The device worker gave an answer that could not be read"


class CommandRefused(Conflict):
    """The worker answered ``ok: false`` (``code`` is the worker's)."""

    code = "driver_error"
    message = "The device refused the command"


def not_connected(device_id: str) -> DeviceNotConnected:
    return DeviceNotConnected(details={"device_id": device_id})


class DeviceCommands:
    """Sends commands to the worker that owns a device."""

    def __init__(self, nc: NatsClient, timeout: float) -> None:
        self.nc = nc
        self.timeout = timeout

    async def request(
        self, device_id: str, command: BaseModel, *, timeout: float | None = None
    ) -> CommandReply:
        """The worker's reply, whatever it says.

        Raises :class:`~clarin_common.errors.DeviceNotConnected` (409) when no
        worker holds the device, :class:`DeviceTimedOut` (503) when none answers
        within ``timeout`` (default: the client's), :class:`DeviceAnswerUnreadable`
        (503) for an answer that is not a reply.
        """
        try:
            reply = await self.nc.request(
                wa_command_subject(device_id),
                command.model_dump_json().encode(),
                timeout=self.timeout if timeout is None else timeout,
            )
        except NoRespondersError as exc:
            raise not_connected(device_id) from exc
        except (NatsTimeoutError, TimeoutError) as exc:
            raise DeviceTimedOut() from exc
        try:
            return CommandReply.model_validate_json(reply.data)
        except ValidationError as exc:
            log.warning("command_reply_unreadable", device_id=device_id, error=str(exc)[:300])
            raise DeviceAnswerUnreadable() from exc

    async def call(
        self, device_id: str, command: BaseModel, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """The result of a command the worker carried out.

        Besides the errors of :meth:`request`: a worker that says the device is
        not connected raises ``DeviceNotConnected``; any other refusal
        :class:`CommandRefused` (409) with the worker's code and message.
        """
        reply = await self.request(device_id, command, timeout=timeout)
        if reply.ok:
            return reply.result or {}
        error = reply.error or {}
        code = error.get("code") or CommandRefused.code
        message = error.get("message") or CommandRefused.message
        if code == DeviceNotConnected.code:
            raise DeviceNotConnected(message, details={"device_id": device_id})
        raise CommandRefused(message, code=code)
