"""The durable consumer of ``APP_EVENTS``: one delivery row per (webhook, event).

A batch of events becomes one INSERT that matches them against the accounts'
active webhooks; JetStream gets the acks only after that commit, so a restart
loses no event. A redelivered event hits the (webhook, event) unique key and
adds nothing. An event reaches the webhooks that existed when it occurred.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

import asyncpg
import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram

from clarin_common.events import APP_EVENTS_STREAM, APP_EVENTS_SUBJECTS
from clarin_common.nats import Delivery, PullConsumer
from clarin_webhooks.delivery.dispatcher import Claimed

log = structlog.get_logger(__name__)

DURABLE = "webhooks"
FAN_OUT_SECONDS = Histogram(
    "clarin_webhook_fanout_seconds", "Duration of one batch of events turned into deliveries"
)
EVENTS = Counter("clarin_webhook_events_total", "Application events read by the webhooks consumer")
# a batch is one INSERT: an event fetched by a process that died comes back this
# soon (redelivery adds nothing, so a short wait costs nothing)
ACK_WAIT_S = 10.0

_FAN_OUT = """
WITH e AS (
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[])
        AS e(event_id, account_id, type, occurred_at, body)
)
INSERT INTO deliveries (webhook_id, account_id, event_id, event_type, body,
                        next_attempt_at, give_up_at)
SELECT w.id, w.account_id, e.event_id, e.type, e.body,
       now(), now() + make_interval(secs => $6)
FROM e
JOIN webhooks w ON w.account_id = e.account_id
WHERE w.active
  AND ('*' = ANY (w.events) OR e.type = ANY (w.events))
  AND w.created_at <= e.occurred_at
ORDER BY w.id, e.event_id
ON CONFLICT (webhook_id, event_id) DO NOTHING
RETURNING id, webhook_id
"""


class NewDeliveries(Protocol):
    """Where fresh deliveries go (the dispatcher): claimed in the same transaction
    as far as there is room, launched after the commit, the rest woken for."""

    async def take_new(
        self, conn: asyncpg.Connection, rows: list[asyncpg.Record]
    ) -> list[Claimed]: ...

    def launch(self, items: list[Claimed]) -> None: ...

    def release(self, items: list[Claimed]) -> None: ...

    def wake(self) -> None: ...


class EventConsumer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        *,
        retry_window: float,
        new_deliveries: NewDeliveries,
        batch_size: int = 500,
    ) -> None:
        self.pool = pool
        self.retry_window = retry_window
        self.new_deliveries = new_deliveries
        self.consumer = PullConsumer(
            js,
            stream=APP_EVENTS_STREAM,
            durable=DURABLE,
            filter_subjects=[APP_EVENTS_SUBJECTS],
            handler=self.handle,
            batch_size=batch_size,
            ack_wait=ACK_WAIT_S,
        )

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def handle(self, deliveries: list[Delivery]) -> None:
        event_ids: list[str] = []
        accounts: list[str] = []
        types: list[str] = []
        times: list[datetime] = []
        bodies: list[str] = []
        for d in deliveries:
            env = d.envelope
            try:
                account_id = str(uuid.UUID(env.account_id))
            except ValueError:
                log.warning("webhook_event_ignored", event_id=env.id, reason="account_id")
                continue
            event_ids.append(env.id)
            accounts.append(account_id)
            types.append(env.type)
            times.append(env.occurred_at)
            # the bytes as published: what the receiver gets and the signature covers
            bodies.append(d.msg.data.decode())
        if not event_ids:
            return
        EVENTS.inc(len(event_ids))
        sink = self.new_deliveries
        claimed: list[Claimed] = []
        try:
            with FAN_OUT_SECONDS.time():
                async with self.pool.acquire() as conn, conn.transaction():
                    rows = await conn.fetch(
                        _FAN_OUT,
                        event_ids,
                        accounts,
                        types,
                        times,
                        bodies,
                        float(self.retry_window),
                    )
                    if rows:
                        claimed = await sink.take_new(conn, rows)
        except BaseException:
            sink.release(claimed)
            raise
        sink.launch(claimed)
        if len(rows) > len(claimed):
            sink.wake()  # the rest is for the claim loop
