"""Application events (``app.{account}.{type}``) published only after commit.

An event is written to the ``outbox`` table in the transaction of the change it
announces. After the commit the caller publishes it right away and deletes the
row once JetStream acknowledged it; when NATS is down (or the process dies in
between) the relay republishes the leftovers. The event id is the
``Nats-Msg-Id``, so a republish inside the stream's duplicate window is dropped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from nats.js import JetStreamContext
from pydantic import BaseModel

from clarin_common.events import AppType, app_envelope, app_event_subject

log = structlog.get_logger(__name__)

# rows younger than this are still being published by the request that wrote them
RELAY_GRACE_S = 10.0


@dataclass(frozen=True)
class PendingEvent:
    id: str
    subject: str
    payload: dict[str, Any]


async def stage_event(
    conn: asyncpg.Connection, account_id: str, type_: AppType, data: BaseModel
) -> PendingEvent:
    """Record an application event inside the caller's transaction."""
    (event,) = await stage_events(conn, [(account_id, type_, data)])
    return event


async def stage_events(
    conn: asyncpg.Connection, items: Sequence[tuple[str, AppType, BaseModel]]
) -> list[PendingEvent]:
    """Record application events inside the caller's transaction (one statement)."""
    events = []
    for account_id, type_, data in items:
        envelope = app_envelope(account_id, type_, data)
        events.append(
            PendingEvent(
                id=envelope.id,
                subject=app_event_subject(account_id, type_),
                payload=envelope.model_dump(mode="json"),
            )
        )
    if events:
        await conn.execute(
            """
            INSERT INTO outbox (id, subject, payload)
            SELECT id, subject, payload::jsonb
            FROM unnest($1::uuid[], $2::text[], $3::text[]) AS e(id, subject, payload)
            """,
            [e.id for e in events],
            [e.subject for e in events],
            [json.dumps(e.payload) for e in events],
        )
    return events


async def _publish(js: JetStreamContext, events: Sequence[PendingEvent]) -> None:
    await asyncio.gather(
        *(
            js.publish(e.subject, json.dumps(e.payload).encode(), headers={"Nats-Msg-Id": e.id})
            for e in events
        )
    )


class Outbox:
    def __init__(self, pool: asyncpg.Pool, js: JetStreamContext, interval: float) -> None:
        self.pool = pool
        self.js = js
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def publish(self, events: Sequence[PendingEvent]) -> None:
        """Publish committed events now; on failure the relay retries them later.

        Never raises: the change is committed, so the caller's answer stands.
        """
        if not events:
            return
        try:
            await _publish(self.js, events)
            await self.pool.execute(
                "DELETE FROM outbox WHERE id = ANY($1::uuid[])", [e.id for e in events]
            )
        except Exception as exc:
            log.warning("app_events_deferred", count=len(events), error=str(exc)[:300])

    async def relay_once(self, grace: float = RELAY_GRACE_S) -> int:
        """Publish the events a failed or interrupted publish left behind."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                SELECT id, subject, payload FROM outbox
                WHERE created_at < now() - make_interval(secs => $1)
                ORDER BY created_at
                LIMIT 500
                FOR UPDATE SKIP LOCKED
                """,
                grace,
            )
            if not rows:
                return 0
            events = [PendingEvent(str(r["id"]), r["subject"], r["payload"]) for r in rows]
            await _publish(self.js, events)
            await conn.execute(
                "DELETE FROM outbox WHERE id = ANY($1::uuid[])", [e.id for e in events]
            )
        log.info("app_events_relayed", count=len(events))
        return len(events)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox_relay_failed", error=str(exc)[:300])

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leads:outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
