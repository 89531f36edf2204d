"""clarin_common.outbox on real PostgreSQL and JetStream: staged events leave only
after commit, and what a failed publish left behind is relayed once."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from clarin_common import nats as natsmod
from clarin_common.contract import Chat, Media, Message
from clarin_common.db import create_pool, migrate, transaction
from clarin_common.events import ChatReadData, Envelope, NewMessageData, PresenceData
from clarin_common.outbox import Outbox, PendingEvent, app_event, envelope_json, stage_events
from clarin_devkit.testing import eventually
from clarin_devkit.testing.plugin import TestServers

MIGRATIONS = Path(__file__).parent / "migrations_sample"


@pytest.fixture
async def pool(test_servers: TestServers, clean_state: None) -> AsyncIterator[asyncpg.Pool]:
    await migrate(test_servers.database_url, "outbox_sample", MIGRATIONS)
    pool = await create_pool(test_servers.database_url, "outbox_sample")
    yield pool
    await pool.close()


class Seen:
    def __init__(self) -> None:
        self.msgs: list[Msg] = []

    async def on_msg(self, msg: Msg) -> None:
        self.msgs.append(msg)

    def chat_ids(self) -> list[str]:
        return [json.loads(m.data)["data"]["chat_id"] for m in self.msgs]


@pytest.fixture
async def seen(nats_client: NatsClient) -> AsyncIterator[Seen]:
    collector = Seen()
    sub = await nats_client.subscribe("app.*.chat_read", cb=collector.on_msg)
    await natsmod.confirm_subscriptions(nats_client)
    yield collector
    await sub.unsubscribe()


async def rows(pool: asyncpg.Pool) -> list[str]:
    return [str(r["id"]) for r in await pool.fetch("SELECT id FROM outbox ORDER BY created_at")]


async def test_only_committed_events_are_published_and_then_removed(
    pool: asyncpg.Pool, nats_client: NatsClient, seen: Seen
) -> None:
    account = str(uuid.uuid4())
    outbox = Outbox(pool, nats_client.jetstream(), relay_interval=3600)
    with pytest.raises(RuntimeError):
        async with transaction(pool) as conn:
            await stage_events(conn, [app_event(account, "chat_read", ChatReadData(chat_id="no"))])
            raise RuntimeError("the change fails: its event goes with it")
    assert await rows(pool) == []

    async with transaction(pool) as conn:
        staged = await stage_events(
            conn,
            [
                app_event(account, "chat_read", ChatReadData(chat_id="one")),
                app_event(account, "chat_read", ChatReadData(chat_id="two")),
            ],
        )
    assert await rows(pool) == [e.id for e in staged]
    await outbox.publish(staged)
    await eventually(lambda: len(seen.msgs) == 2)
    assert seen.chat_ids() == ["one", "two"]
    assert [m.headers and m.headers["Nats-Msg-Id"] for m in seen.msgs] == [e.id for e in staged]
    assert [m.subject for m in seen.msgs] == [f"app.{account}.chat_read"] * 2
    assert await rows(pool) == []


async def test_a_failed_publish_is_relayed_once(
    pool: asyncpg.Pool, test_servers: TestServers, nats_client: NatsClient, seen: Seen
) -> None:
    account = str(uuid.uuid4())
    # NATS gone right after the commit: a connection that is closed
    gone = await natsmod.connect(test_servers.nats_url, name="outbox-gone")
    await gone.close()
    broken = Outbox(pool, gone.jetstream(), relay_interval=3600)
    async with transaction(pool) as conn:
        staged = await stage_events(
            conn, [app_event(account, "chat_read", ChatReadData(chat_id="late"))]
        )
    await broken.publish(staged)  # never raises: the change is committed
    assert await rows(pool) == [staged[0].id]

    relay = Outbox(pool, nats_client.jetstream(), relay_interval=3600)
    # younger than the grace: the request that wrote it may still be publishing
    assert await relay.relay_once() == 0
    assert await relay.relay_once(grace=0) == 1
    assert await relay.relay_once(grace=0) == 0
    await eventually(lambda: seen.msgs)
    # a later event shows nothing else came from the relay
    async with transaction(pool) as conn:
        later = await stage_events(
            conn, [app_event(account, "chat_read", ChatReadData(chat_id="later"))]
        )
    await relay.publish(later)
    await eventually(lambda: len(seen.msgs) == 2)
    assert seen.chat_ids() == ["late", "later"]
    assert seen.msgs[0].headers is not None
    assert seen.msgs[0].headers["Nats-Msg-Id"] == staged[0].id
    assert await rows(pool) == []


async def test_the_relay_runs_while_the_outbox_is_entered(
    pool: asyncpg.Pool, nats_client: NatsClient, seen: Seen
) -> None:
    account = str(uuid.uuid4())
    async with transaction(pool) as conn:
        await stage_events(conn, [app_event(account, "chat_read", ChatReadData(chat_id="left"))])
    await pool.execute("UPDATE outbox SET created_at = now() - interval '1 minute'")
    async with Outbox(pool, nats_client.jetstream(), relay_interval=0.05):
        await eventually(lambda: seen.msgs)
    assert seen.chat_ids() == ["left"]
    assert await rows(pool) == []


def test_envelope_json_is_the_envelope_as_pydantic_writes_it() -> None:
    """The outbox writes envelopes with its own fast path: the bytes must be
    exactly what ``model_dump_json`` gives, for every kind of payload."""
    account = str(uuid.uuid4())
    device = str(uuid.uuid4())
    now = datetime.now(UTC)
    chat = Chat(
        id=str(uuid.uuid4()),
        device_id=device,
        jid="5215512345678@s.whatsapp.net",
        name='Ana "la" Pérez 😀',
        phone="5215512345678",
        last_message_preview="¿Hola?\n",
        last_message_at=now,
        unread_count=3,
        labels=["vip", "ñ"],
    )
    message = Message(
        id=str(uuid.uuid4()),
        chat_id=chat.id,
        device_id=device,
        wa_message_id="3EB0ABC",
        direction="in",
        type="image",
        body="caption \\ with \u2028 odd characters",
        media=Media(url="/api/media/x", mime_type="image/jpeg", size=10, status="pending"),
        status="received",
        sent_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-6))),
    )
    envelopes = [
        app_event(
            account, "new_message", NewMessageData(message=message, chat=chat), device_id=device
        ),
        app_event(account, "chat_read", ChatReadData(chat_id=chat.id)),
        app_event(account, "presence", PresenceData(chat_id=chat.id, state="composing")),
    ]
    for _, env in envelopes:
        assert envelope_json(env) == env.model_dump_json().encode()
    raw = Envelope[Any](type="chat_read", account_id=account, data={"chat_id": "x"})
    assert envelope_json(raw) == raw.model_dump_json().encode()


async def test_an_event_no_stream_takes_stays_in_the_outbox(
    pool: asyncpg.Pool, nats_client: NatsClient, seen: Seen
) -> None:
    """One ack of a batch is missing (no stream listens on the subject): the
    batch is not confirmed, so its rows stay for the relay."""
    account = str(uuid.uuid4())
    outbox = Outbox(pool, nats_client.jetstream(), relay_interval=3600)
    async with transaction(pool) as conn:
        staged = await stage_events(
            conn,
            [
                app_event(account, "chat_read", ChatReadData(chat_id="fine")),
                app_event(account, "chat_read", ChatReadData(chat_id="lost")),
            ],
        )
    lost = PendingEvent(staged[1].id, f"nowhere.{account}", staged[1].payload)
    await outbox.publish([staged[0], lost])  # never raises
    assert sorted(await rows(pool)) == sorted(e.id for e in staged)
    await outbox.publish(staged)
    assert await rows(pool) == []
    await eventually(lambda: len(seen.msgs) == 3)
    assert seen.chat_ids() == ["fine", "fine", "lost"]
