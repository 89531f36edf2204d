"""The WebSocket hub: auth, ping/pong, per-account delivery from NATS."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from clarin_common.events import (
    ChatReadData,
    WaQr,
    app_envelope,
    app_event_subject,
    wa_envelope,
    wa_event_subject,
)
from clarin_common.nats import encode, publish_event
from clarin_devkit.testing import eventually, make_token
from services.gateway.tests.helpers import Gateway, GatewayFactory


def ws_connect(gw: Gateway, token: str, **kwargs: Any) -> connect:
    return connect(f"{gw.ws_url}?token={token}", proxy=None, open_timeout=5, **kwargs)


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def close_code(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Read until the server closes; the close code it sent."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    return info.value.rcvd.code if info.value.rcvd else None


def new_account() -> str:
    return str(uuid.uuid4())


@pytest.mark.parametrize(
    "token",
    ["", "garbage", make_token(ttl=timedelta(seconds=-60)), make_token()[:-3] + "AAA"],
    ids=["missing", "garbage", "expired", "tampered"],
)
async def test_bad_token_closes_with_4401(gateway: Gateway, token: str) -> None:
    async with ws_connect(gateway, token) as ws:
        assert await close_code(ws) == 4401
    assert gateway.context.hub.subscribed_accounts() == set()


async def test_ping_pong(gateway: Gateway) -> None:
    async with ws_connect(gateway, make_token()) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv_json(ws) == {"type": "pong"}
        # anything else from the client is ignored, the socket stays up
        await ws.send("not json")
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv_json(ws) == {"type": "pong"}


async def test_event_reaches_its_account_only(gateway: Gateway, nats_client: NatsClient) -> None:
    js = nats_client.jetstream()
    account_a, account_b = new_account(), new_account()
    async with (
        ws_connect(gateway, make_token(account_id=account_a)) as ws_a,
        ws_connect(gateway, make_token(account_id=account_b)) as ws_b,
        ws_connect(gateway, make_token(account_id=account_a)) as ws_a2,
    ):
        event = app_envelope(account_a, "chat_read", ChatReadData(chat_id="chat-1"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await publish_event(js, app_event_subject(account_a, "chat_read"), event)
        frame = await recv_json(ws_a, timeout=1.0)
        assert loop.time() - started < 1.0
        assert frame == {
            "type": "chat_read",
            "account_id": account_a,
            "data": {"chat_id": "chat-1"},
            "ts": event.occurred_at.isoformat().replace("+00:00", "Z"),
        }
        assert await recv_json(ws_a2) == frame

        # B's first frame is B's own marker: nothing of A's came before it
        marker = app_envelope(account_b, "chat_read", ChatReadData(chat_id="marker"))
        await publish_event(js, app_event_subject(account_b, "chat_read"), marker)
        got = await recv_json(ws_b)
        assert got["account_id"] == account_b
        assert got["data"] == {"chat_id": "marker"}

        # a payload claiming another account than its subject goes nowhere
        forged = app_envelope(account_b, "chat_read", ChatReadData(chat_id="forged"))
        await nats_client.publish(app_event_subject(account_a, "chat_read"), encode(forged))
        last = app_envelope(account_a, "chat_read", ChatReadData(chat_id="last"))
        await publish_event(js, app_event_subject(account_a, "chat_read"), last)
        assert (await recv_json(ws_a))["data"] == {"chat_id": "last"}


async def test_qr_events_become_qr_code_frames(gateway: Gateway, nats_client: NatsClient) -> None:
    js = nats_client.jetstream()
    account, device = new_account(), str(uuid.uuid4())
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with ws_connect(gateway, make_token(account_id=account)) as ws:
        event = wa_envelope(account, device, "qr", WaQr(code="2@abc,def", expires_at=expires))
        await publish_event(js, wa_event_subject(account, device, "qr"), event)
        frame = await recv_json(ws)
        assert frame == {
            "type": "qr_code",
            "account_id": account,
            "data": {
                "device_id": device,
                "code": "2@abc,def",
                "expires_at": "2030-01-02T03:04:05Z",
            },
            "ts": event.occurred_at.isoformat().replace("+00:00", "Z"),
        }


async def test_subscription_lives_only_while_the_account_has_sockets(
    gateway: Gateway, nats_client: NatsClient
) -> None:
    hub = gateway.context.hub
    assert hub.subscription_count() == 0
    account = new_account()
    ws1 = await ws_connect(gateway, make_token(account_id=account))
    ws2 = await ws_connect(gateway, make_token(account_id=account))
    assert hub.subscribed_accounts() == {account}
    assert hub.subscription_count() == 2  # app.{account}.> and wa.evt.{account}.*.qr
    await ws1.close()
    await eventually(lambda: hub.socket_count(account) == 1)
    assert hub.subscribed_accounts() == {account}
    # the remaining socket still gets events
    event = app_envelope(account, "chat_read", ChatReadData(chat_id="still"))
    await publish_event(nats_client.jetstream(), app_event_subject(account, "chat_read"), event)
    assert (await recv_json(ws2))["data"] == {"chat_id": "still"}
    await ws2.close()
    await eventually(lambda: hub.subscribed_accounts() == set())
    assert hub.subscription_count() == 0


async def test_slow_socket_is_closed_without_slowing_others(
    gateway_factory: GatewayFactory, nats_client: NatsClient
) -> None:
    async with gateway_factory(ws_send_queue_size=8) as gw:
        slow_account, other_account = new_account(), new_account()
        # the slow client never reads; max_queue=1 makes it stop draining the socket
        # (and without compression the frames really fill the buffers)
        async with (
            ws_connect(
                gw, make_token(account_id=slow_account), max_queue=1, compression=None
            ) as slow,
            ws_connect(gw, make_token(account_id=other_account)) as other,
        ):
            big = ChatReadData(chat_id="x" * 100_000)
            subject = app_event_subject(slow_account, "chat_read")
            for _ in range(300):
                await nats_client.publish(
                    subject, encode(app_envelope(slow_account, "chat_read", big))
                )
            await nats_client.flush()
            hub = gw.context.hub
            await eventually(lambda: hub.socket_count(slow_account) == 0, timeout=10)

            # the other account is served as usual
            ok = app_envelope(other_account, "chat_read", ChatReadData(chat_id="fine"))
            await nats_client.publish(app_event_subject(other_account, "chat_read"), encode(ok))
            assert (await recv_json(other))["data"] == {"chat_id": "fine"}

            # the slow one, once it reads again, finds itself closed with 1013
            assert await close_code(slow, timeout=10) == 1013


async def test_socket_closes_with_4401_when_its_token_expires(gateway: Gateway) -> None:
    token = make_token(ttl=timedelta(seconds=1))
    async with ws_connect(gateway, token) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv_json(ws) == {"type": "pong"}
        assert await close_code(ws, timeout=4) == 4401


async def test_events_flow_as_soon_as_the_socket_is_open(
    gateway: Gateway, nats_client: NatsClient
) -> None:
    # an open socket means the account's subscriptions are live on the server
    # (guards against nats-py's flush returning before its SUBs were sent)
    js = nats_client.jetstream()
    for _ in range(25):
        account = new_account()
        async with ws_connect(gateway, make_token(account_id=account)) as ws:
            event = app_envelope(account, "chat_read", ChatReadData(chat_id="now"))
            await publish_event(js, app_event_subject(account, "chat_read"), event)
            assert (await recv_json(ws))["data"] == {"chat_id": "now"}


async def test_slow_socket_does_not_hold_back_its_own_accounts_other_sockets(
    gateway_factory: GatewayFactory, nats_client: NatsClient
) -> None:
    # the same frames fan out to both sockets of one account: the one that never
    # reads is closed, the other gets every frame, in order, before the slow one
    # has read anything
    async with gateway_factory(ws_send_queue_size=8) as gw:
        account = new_account()
        async with (
            ws_connect(gw, make_token(account_id=account), max_queue=1, compression=None) as slow,
            ws_connect(gw, make_token(account_id=account)) as fast,
        ):
            subject = app_event_subject(account, "chat_read")
            for i in range(300):
                data = ChatReadData(chat_id=f"{i:04d}" + "x" * 100_000)
                await nats_client.publish(subject, encode(app_envelope(account, "chat_read", data)))
            await nats_client.flush()
            got = [(await recv_json(fast, timeout=10))["data"]["chat_id"][:4] for _ in range(300)]
            assert got == [f"{i:04d}" for i in range(300)]
            hub = gw.context.hub
            await eventually(lambda: hub.socket_count(account) == 1, timeout=10)
            assert await close_code(slow, timeout=10) == 1013


async def test_a_burst_reaches_every_socket_whole_and_in_order(
    gateway: Gateway, nats_client: NatsClient
) -> None:
    account = new_account()
    async with (
        ws_connect(gateway, make_token(account_id=account)) as ws1,
        ws_connect(gateway, make_token(account_id=account)) as ws2,
    ):
        subject = app_event_subject(account, "chat_read")
        events = [
            app_envelope(account, "chat_read", ChatReadData(chat_id=f"chat-{i}"))
            for i in range(200)
        ]
        for event in events:
            await nats_client.publish(subject, encode(event))
        await nats_client.flush()
        for ws in (ws1, ws2):
            frames = [await recv_json(ws) for _ in events]
            # one JSON object per WebSocket message, each the frame of API.md
            assert frames == [
                {
                    "type": "chat_read",
                    "account_id": account,
                    "data": {"chat_id": f"chat-{i}"},
                    "ts": event.occurred_at.isoformat().replace("+00:00", "Z"),
                }
                for i, event in enumerate(events)
            ]
