"""A NATS outage is said once per component (``nats_unavailable``, a warning with
the reason) and its end once (``nats_restored``), whatever failed in between; and
what was committed meanwhile still goes out. The server here is private to the
test: it is stopped and started again on the same port and store."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from clarin_common import nats as natsmod
from clarin_common.db import create_pool, migrate, transaction
from clarin_common.events import APP_EVENTS_STREAM, ChatReadData
from clarin_common.nats import Delivery, PullConsumer
from clarin_common.outage import NatsOutage, is_outage
from clarin_common.outbox import Outbox, PendingEvent, app_event, stage_events
from clarin_devkit.devservers import free_ports, start_nats, stop_all
from clarin_devkit.testing import LogRecords, capture_log_events, eventually
from clarin_devkit.testing.plugin import TestServers

MIGRATIONS = Path(__file__).parent / "migrations_sample"


@pytest.fixture
def records() -> Iterator[LogRecords]:
    with capture_log_events() as handler:
        yield handler


@pytest.fixture
async def pool(test_servers: TestServers, clean_state: None) -> AsyncIterator[asyncpg.Pool]:
    await migrate(test_servers.database_url, "outbox_sample", MIGRATIONS)
    pool = await create_pool(test_servers.database_url, "outbox_sample")
    yield pool
    await pool.close()


def test_the_component_says_it_once_and_its_end_once(records: LogRecords) -> None:
    outage = NatsOutage("part")
    outage.ok()  # nothing had failed: nothing to say
    outage.failed(TimeoutError("nats: timeout"))
    outage.failed(ConnectionError("refused"))
    assert outage.down
    outage.ok()
    outage.ok()
    assert not outage.down
    said = [(level, e["event"]) for level, e in records.events if e.get("component") == "part"]
    assert said == [(logging.WARNING, "nats_unavailable"), (logging.INFO, "nats_restored")]
    assert (
        records.named("nats_unavailable", "part")[0][1]["reason"] == "TimeoutError: nats: timeout"
    )
    assert is_outage(TimeoutError()) and not is_outage(ValueError("a bad answer"))


async def test_an_outage_is_said_once_per_component_and_nothing_committed_is_lost(
    tmp_path: Path, pool: asyncpg.Pool, records: LogRecords
) -> None:
    root = tmp_path / "servers"
    port = free_ports(1)[0]
    start_nats(root / "nats", port)
    received: list[str] = []

    async def handle(deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            received.append(delivery.envelope.data["chat_id"])  # acked by the consumer

    try:
        nc = await natsmod.connect(f"nats://127.0.0.1:{port}", name="outage-test")
        js = nc.jetstream(timeout=0.5)
        await natsmod.ensure_streams(js)
        consumer = PullConsumer(
            js,
            stream=APP_EVENTS_STREAM,
            durable="outage_test",
            filter_subjects=["app.*.chat_read"],
            handler=handle,
            fetch_timeout=0.2,
        )
        await consumer.start()
        outbox = Outbox(pool, js, relay_interval=3600, name="outage_test")
        account = str(uuid.uuid4())

        async def commit(chat_id: str) -> list[PendingEvent]:
            async with transaction(pool) as conn:
                return await stage_events(
                    conn, [app_event(account, "chat_read", ChatReadData(chat_id=chat_id))]
                )

        await outbox.publish(await commit("before"))
        await eventually(lambda: received == ["before"], timeout=10)

        stop_all(root)  # the server goes away
        await eventually(lambda: not nc.is_connected, timeout=10)
        for i in range(3):  # each committed change fails to publish: kept in the outbox
            await outbox.publish(await commit(f"during-{i}"))
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 3

        start_nats(root / "nats", port)  # back, with its store
        await eventually(lambda: nc.is_connected, timeout=20)
        assert await outbox.relay_once(grace=0) == 3
        await outbox.publish(await commit("after"))
        expected = ["before", "during-0", "during-1", "during-2", "after"]
        await eventually(lambda: sorted(received) == sorted(expected), timeout=20)
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0

        await consumer.stop()
        await nc.close()
    finally:
        stop_all(root)

    for component in ("nats:outage-test", "outbox:outage_test"):
        [(level, said)] = records.named("nats_unavailable", component)
        assert level == logging.WARNING and said["reason"], said
        [(level, _)] = records.named("nats_restored", component)
        assert level == logging.INFO
    # the consumer's fetches may only have timed out meanwhile; if it saw the
    # outage it said so once, and once that it ended
    consumer_down = records.named("nats_unavailable", "consumer:outage_test")
    assert len(consumer_down) <= 1
    assert len(records.named("nats_restored", "consumer:outage_test")) == len(consumer_down)
    # nothing else about it above debug: no error, no warning per failed publish
    assert not [e for level, e in records.events if level >= logging.ERROR]
    assert not records.named("app_events_deferred")
    assert not records.named("nats_error")
    assert not records.named("consumer_fetch_failed")
