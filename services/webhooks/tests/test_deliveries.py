"""Deliveries: from APP_EVENTS to a signed POST, retries, restarts, idempotency."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import asyncpg
import httpx
from nats.aio.client import Client as NatsClient

from clarin_common.events import LeadDeletedData, RawEnvelope
from clarin_common.nats import Delivery
from clarin_devkit.testing import eventually, free_port, running_app
from clarin_devkit.testing.plugin import TestServers
from clarin_webhooks.delivery.consumer import EventConsumer
from clarin_webhooks.delivery.dispatcher import Claimed
from clarin_webhooks.main import create_app
from services.webhooks.tests.helpers import (
    AppEvents,
    SettingsMaker,
    Tenant,
    WebhookMaker,
    create_webhook,
    delivery_of,
    newest_delivery,
    webhook_of,
)
from services.webhooks.tests.helpers import deliveries_of as log_of
from tests.webhook_receiver import Receiver, serving, verified


async def test_a_signed_post_of_the_envelope(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    make_webhook: WebhookMaker,
    receiver: Receiver,
    app_events: AppEvents,
) -> None:
    tenant = new_tenant()
    hook = await make_webhook(tenant, receiver.url + "/clarin?x=1")
    event_id = await app_events.chat_read(tenant.account_id, "chat-ñ-😀")
    await receiver.wait_for(lambda r: len(r.requests) == 1)
    (got,) = receiver.requests
    assert got.path == "/clarin"
    assert got.headers["content-type"] == "application/json"
    assert got.event_type == "chat_read"
    assert str(uuid.UUID(got.delivery_id)) == got.delivery_id
    assert abs(int(got.headers["x-clarin-timestamp"]) - time.time()) < 60
    assert got.headers["x-clarin-signature"].startswith("sha256=")
    assert verified(got, hook["secret"])
    assert not verified(got, hook["secret"] + "x")
    envelope = got.json()
    assert envelope["id"] == event_id
    assert envelope["type"] == "chat_read"
    assert envelope["account_id"] == tenant.account_id
    assert envelope["data"] == {"chat_id": "chat-ñ-😀"}
    assert set(envelope) >= {"id", "type", "account_id", "device_id", "occurred_at", "data"}


async def test_only_subscribed_types_of_the_own_account(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    make_webhook: WebhookMaker,
    receiver: Receiver,
    app_events: AppEvents,
) -> None:
    a, b = new_tenant(), new_tenant()
    only_deletes = await make_webhook(a, receiver.url + "/a1", events=["lead_deleted"])
    everything = await make_webhook(a, receiver.url + "/a2", events=["*"])
    inactive = await make_webhook(a, receiver.url + "/a3", events=["*"])
    switched_off = webhook_of(
        await client.patch(
            f"/api/webhooks/{inactive['id']}", json={"active": False}, headers=a.headers
        )
    )
    assert switched_off["active"] is False
    other = await make_webhook(b, receiver.url + "/b", events=["*"])

    await app_events.chat_read(a.account_id)
    await app_events.publish(a.account_id, "lead_deleted", LeadDeletedData(lead_id="L1"))
    await app_events.chat_read(b.account_id)

    def paths() -> list[str]:
        return sorted(r.path for r in receiver.accepted())

    await receiver.wait_for(lambda r: paths() == ["/a1", "/a2", "/a2", "/b"])
    # every event of the batch is matched in one statement: the rows are all there
    assert [d["event_type"] for d in await log_of(client, a, only_deletes)] == ["lead_deleted"]
    assert len(await log_of(client, a, everything)) == 2
    assert await log_of(client, a, inactive) == []
    (b_row,) = await log_of(client, b, other)
    assert b_row["event_type"] == "chat_read"
    b_request = next(r for r in receiver.accepted() if r.path == "/b")
    assert b_request.json()["account_id"] == b.account_id

    # switched back on, it gets what happens from then on
    switched_on = webhook_of(
        await client.patch(
            f"/api/webhooks/{inactive['id']}", json={"active": True}, headers=a.headers
        )
    )
    assert switched_on["active"] is True
    await app_events.chat_read(a.account_id, "later")
    await receiver.wait_for(lambda r: len(r.accepted(lambda x: x.path == "/a3")) == 1)
    assert receiver.accepted(lambda x: x.path == "/a3")[0].json()["data"] == {"chat_id": "later"}


async def test_events_before_the_webhook_existed_are_not_sent(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    make_webhook: WebhookMaker,
    receiver: Receiver,
    app_events: AppEvents,
    nats_client: NatsClient,
) -> None:
    tenant = new_tenant()
    await app_events.chat_read(tenant.account_id, "before")
    hook = await make_webhook(tenant, receiver.url + "/hook")
    await app_events.chat_read(tenant.account_id, "after")
    await receiver.wait_for(lambda r: len(r.accepted()) == 1)

    async def drained() -> bool:
        info = await nats_client.jetstream().consumer_info("APP_EVENTS", "webhooks")
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await eventually(drained)
    assert [r.json()["data"]["chat_id"] for r in receiver.requests] == ["after"]
    assert len(await log_of(client, tenant, hook)) == 1


async def test_500_twice_then_the_same_delivery_id_succeeds(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    make_webhook: WebhookMaker,
    receiver: Receiver,
    app_events: AppEvents,
) -> None:
    tenant = new_tenant()
    hook = await make_webhook(tenant, receiver.url + "/hook")
    receiver.plan = [500, 500]
    await app_events.chat_read(tenant.account_id)
    await receiver.wait_for(lambda r: len(r.accepted()) == 1)
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    ids = {r.delivery_id for r in receiver.requests}
    assert len(ids) == 1
    assert len({r.body for r in receiver.requests}) == 1
    assert all(verified(r, hook["secret"]) for r in receiver.requests)

    row = await newest_delivery(client, tenant, hook, lambda d: d["status"] == "delivered")
    assert row["id"] in ids
    assert row["attempt"] == 3 and row["status_code"] == 200 and row["error"] is None


async def test_no_answer_in_time_is_retried(
    new_tenant: Callable[[], Tenant],
    receiver: Receiver,
    app_events: AppEvents,
    clean_state: None,
    fast_settings: SettingsMaker,
) -> None:
    # a long first backoff keeps the failed attempt visible in the log
    settings = fast_settings(delivery_timeout_seconds=0.5, retry_base_seconds=60)
    tenant = new_tenant()
    async with running_app(create_app(settings)) as client:
        hook = await create_webhook(client, tenant, receiver.url + "/slow")
        receiver.delay = 1.0
        await app_events.chat_read(tenant.account_id)

        row = await newest_delivery(client, tenant, hook, lambda d: bool(d["error"]), timeout=10)
        assert row["status"] == "pending" and row["attempt"] == 1
        assert row["status_code"] is None
        assert row["error"] == "No answer within 0.5 s"
        assert row["next_attempt_at"] is not None and row["delivered_at"] is None

        receiver.delay = 0
        again = delivery_of(
            await client.post(
                f"/api/webhooks/{hook['id']}/deliveries/{row['id']}/redeliver",
                headers=tenant.headers,
            )
        )
        assert again["id"] == row["id"] and again["status"] == "pending"
        await receiver.wait_for(lambda r: len(r.accepted()) == 1)
        assert receiver.accepted()[0].delivery_id == row["id"]


async def test_a_receiver_down_for_a_while_gets_everything_afterwards(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    make_webhook: WebhookMaker,
    app_events: AppEvents,
) -> None:
    tenant = new_tenant()
    port = free_port()
    hook = await make_webhook(tenant, f"http://127.0.0.1:{port}/hook")
    sent = [await app_events.chat_read(tenant.account_id, f"c{i}") for i in range(20)]

    async def retried_while_down() -> bool:
        items = await log_of(client, tenant, hook)
        return len(items) == 20 and all(
            d["attempt"] >= 2 and d["status"] in ("pending", "sending") for d in items
        )

    await eventually(retried_while_down, timeout=15)
    rows = await log_of(client, tenant, hook)
    assert all(d["error"] for d in rows if d["status"] == "pending")
    async with serving(Receiver(), port=port) as receiver:
        await receiver.wait_for(lambda r: len(r.accepted()) == 20, timeout=20)
        assert sorted(r.json()["id"] for r in receiver.accepted()) == sorted(sent)
        assert len({r.delivery_id for r in receiver.accepted()}) == 20
        assert all(verified(r, hook["secret"]) for r in receiver.accepted())


async def test_gives_up_after_the_retry_window(
    new_tenant: Callable[[], Tenant],
    receiver: Receiver,
    app_events: AppEvents,
    clean_state: None,
    fast_settings: SettingsMaker,
) -> None:
    tenant = new_tenant()
    async with running_app(create_app(fast_settings(retry_window_seconds=1.0))) as client:
        hook = await create_webhook(client, tenant, receiver.url + "/hook")
        receiver.plan = [503] * 1000
        await app_events.chat_read(tenant.account_id)

        row = await newest_delivery(
            client, tenant, hook, lambda d: d["status"] == "failed", timeout=10
        )
        attempts = len(receiver.requests)
        assert row["attempt"] == attempts >= 2
        assert row["status_code"] == 503 and row["error"] == "HTTP 503"
        assert row["next_attempt_at"] is None and row["delivered_at"] is None


async def test_a_restart_loses_nothing(
    new_tenant: Callable[[], Tenant],
    receiver: Receiver,
    app_events: AppEvents,
    clean_state: None,
    fast_settings: SettingsMaker,
) -> None:
    tenant = new_tenant()
    sent: list[str] = []
    async with running_app(create_app(fast_settings())) as client:
        hook = await create_webhook(client, tenant, receiver.url + "/hook")
        sent += [await app_events.chat_read(tenant.account_id, f"a{i}") for i in range(10)]
        await receiver.wait_for(lambda r: len(r.accepted()) >= 1)
    # down: events keep coming into the stream
    sent += [await app_events.chat_read(tenant.account_id, f"b{i}") for i in range(10)]
    async with running_app(create_app(fast_settings())) as client:
        await receiver.wait_for(lambda r: len(r.accepted()) >= 20)
        got = sorted(r.json()["id"] for r in receiver.accepted())
        assert got == sorted(sent)  # each once: a clean stop finishes what it claimed
        assert len(await log_of(client, tenant, hook)) == 20


async def test_a_redelivered_event_adds_nothing(
    client: httpx.AsyncClient,
    new_tenant: Callable[[], Tenant],
    make_webhook: WebhookMaker,
    receiver: Receiver,
    nats_client: NatsClient,
    test_servers: TestServers,
    db: asyncpg.Connection,
) -> None:
    """JetStream redelivers after a crash between commit and ack: the unique key holds."""
    tenant = new_tenant()
    hook = await make_webhook(tenant, receiver.url + "/hook")
    body = json.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": "chat_read",
            "account_id": tenant.account_id,
            "device_id": None,
            "occurred_at": "2999-01-01T00:00:00Z",
            "data": {"chat_id": "x"},
        }
    ).encode()
    # a message as the client hands it over, on a subject outside APP_EVENTS so
    # that only this consumer sees it (the app's own consumer would take it too)
    subject = f"test.redelivery.{uuid.uuid4().hex}"
    sub = await nats_client.subscribe(subject)
    await nats_client.publish(subject, body)
    msg = await sub.next_msg(timeout=5)
    await sub.unsubscribe()
    delivery = Delivery(msg, RawEnvelope.model_validate_json(body))

    class Sink:
        """Takes none of the fresh rows (as a full dispatcher would) and counts wakes."""

        def __init__(self) -> None:
            self.offered: list[int] = []
            self.wakes = 0

        async def take_new(
            self, conn: asyncpg.Connection, rows: list[asyncpg.Record]
        ) -> list[Claimed]:
            self.offered.append(len(rows))
            return []

        def launch(self, items: list[Claimed]) -> None:
            assert items == []

        def release(self, items: list[Claimed]) -> None:
            assert items == []

        def wake(self) -> None:
            self.wakes += 1

    sink = Sink()
    pool = await asyncpg.create_pool(
        test_servers.database_url, server_settings={"search_path": "webhooks"}
    )
    try:
        consumer = EventConsumer(
            pool, nats_client.jetstream(), retry_window=60, new_deliveries=sink
        )
        await consumer.handle([delivery])
        await consumer.handle([delivery])
        await consumer.handle([delivery, delivery])
    finally:
        await pool.close()
    assert sink.offered == [1] and sink.wakes == 1  # only the first insert was new
    count = await db.fetchval(
        "SELECT count(*) FROM deliveries WHERE webhook_id = $1", uuid.UUID(hook["id"])
    )
    assert count == 1


async def test_a_slow_receiver_does_not_hold_up_the_others(
    new_tenant: Callable[[], Tenant],
    app_events: AppEvents,
    clean_state: None,
    fast_settings: SettingsMaker,
) -> None:
    """Each webhook has its share of the attempts in flight: a receiver that takes
    its time gets at most that many at once, and the others go on meanwhile."""
    tenant = new_tenant()
    settings = fast_settings(max_in_flight=4, max_in_flight_per_webhook=2)
    async with (
        serving(Receiver(delay=0.5)) as slow,
        serving(Receiver()) as fast,
        running_app(create_app(settings)) as client,
    ):
        for url in (slow.url + "/slow", fast.url + "/fast"):
            await create_webhook(client, tenant, url)
        for i in range(12):
            await app_events.chat_read(tenant.account_id, f"c{i}")
        await fast.wait_for(lambda r: len(r.accepted()) == 12)
        assert len(slow.requests) < 12  # still working through its share
        await slow.wait_for(lambda r: len(r.accepted()) == 12, timeout=30)
        assert slow.max_in_progress == 2
