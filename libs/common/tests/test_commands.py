"""clarin_common.commands.DeviceCommands against a real NATS: what each answer of
the owning worker (or its absence) becomes."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from clarin_common.commands import (
    CommandRefused,
    DeviceAnswerUnreadable,
    DeviceCommands,
    DeviceTimedOut,
)
from clarin_common.errors import DeviceNotConnected
from clarin_common.events import PairPhoneCommand, wa_command_subject
from clarin_common.nats import confirm_subscriptions

Answer = Callable[[Msg], Awaitable[None]]


@pytest.fixture
async def worker(
    nats_client: NatsClient,
) -> AsyncIterator[Callable[[str, Answer], Awaitable[None]]]:
    """Plays the worker that owns a device: answers its commands with ``answer``."""
    subs = []

    async def own(device_id: str, answer: Answer) -> None:
        subs.append(await nats_client.subscribe(wa_command_subject(device_id), cb=answer))
        await confirm_subscriptions(nats_client)

    yield own
    for sub in subs:
        await sub.unsubscribe()


def replying(body: bytes) -> Answer:
    async def answer(msg: Msg) -> None:
        await msg.respond(body)

    return answer


COMMAND = PairPhoneCommand(phone="5215512345678")


async def test_no_worker_is_device_not_connected(nats_client: NatsClient) -> None:
    device = str(uuid.uuid4())
    with pytest.raises(DeviceNotConnected) as caught:
        await DeviceCommands(nats_client, timeout=5).call(device, COMMAND)
    assert caught.value.status_code == 409
    assert caught.value.details == {"device_id": device}


async def test_the_result_of_a_command_carried_out(
    nats_client: NatsClient, worker: Callable[[str, Answer], Awaitable[None]]
) -> None:
    device = str(uuid.uuid4())
    received: list[dict[str, object]] = []

    async def answer(msg: Msg) -> None:
        received.append(json.loads(msg.data))
        await msg.respond(b'{"ok": true, "result": {"pairing_code": "ABCD-EFGH"}}')

    await worker(device, answer)
    commands = DeviceCommands(nats_client, timeout=5)
    assert await commands.call(device, COMMAND) == {"pairing_code": "ABCD-EFGH"}
    assert received == [COMMAND.model_dump(mode="json")]


@pytest.mark.parametrize(
    ("error", "raised", "code"),
    [
        (
            {"code": "device_not_connected", "message": "gone"},
            DeviceNotConnected,
            "device_not_connected",
        ),
        ({"code": "invalid_phone", "message": "no such number"}, CommandRefused, "invalid_phone"),
        ({}, CommandRefused, "driver_error"),
    ],
)
async def test_a_refusal_keeps_the_workers_code(
    nats_client: NatsClient,
    worker: Callable[[str, Answer], Awaitable[None]],
    error: dict[str, str],
    raised: type[Exception],
    code: str,
) -> None:
    device = str(uuid.uuid4())
    await worker(device, replying(json.dumps({"ok": False, "error": error}).encode()))
    commands = DeviceCommands(nats_client, timeout=5)
    # request hands the refusal over as it is; call raises it
    reply = await commands.request(device, COMMAND)
    assert not reply.ok and reply.error == error
    with pytest.raises(raised) as caught:
        await commands.call(device, COMMAND)
    assert getattr(caught.value, "code") == code
    assert getattr(caught.value, "status_code") == 409


async def test_silence_and_garbage_are_503(
    nats_client: NatsClient, worker: Callable[[str, Answer], Awaitable[None]]
) -> None:
    silent, garbled = str(uuid.uuid4()), str(uuid.uuid4())

    async def never_answer(msg: Msg) -> None:
        return None

    await worker(silent, never_answer)
    await worker(garbled, replying(b"not a reply"))
    commands = DeviceCommands(nats_client, timeout=5)
    with pytest.raises(DeviceTimedOut) as timed_out:
        await commands.call(silent, COMMAND, timeout=0.2)
    with pytest.raises(DeviceAnswerUnreadable) as unreadable:
        await commands.call(garbled, COMMAND)
    assert timed_out.value.status_code == unreadable.value.status_code == 503
    assert timed_out.value.code == unreadable.value.code == "service_unavailable"
