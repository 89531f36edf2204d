"""Events published only after the change they announce committed (the outbox).

A service writes each event into its ``outbox`` table (every service schema has
one: ``clarin_common/migrations``) in the transaction of the change, with
:func:`stage_events`. After the commit it calls :meth:`Outbox.publish`, which publishes
at once and deletes the rows JetStream acknowledged. The relay
(:meth:`Outbox.relay_once`, every ``relay_interval`` seconds) republishes the
rows a failed publish, a NATS outage or a crash between commit and publish left
behind.

Loss guarantee: an event whose transaction committed is published at least
once, as long as the database keeps its row; an event whose transaction rolled
back is never published. The event id travels as ``Nats-Msg-Id``, so JetStream
drops a republish inside the stream's duplicate window (two minutes) and
consumers, which are idempotent, absorb a later one. Order holds within one
:meth:`Outbox.publish`; the relay may deliver a left-behind event after newer
ones.

Each envelope is serialized once, when it is staged: the same JSON bytes go into
the outbox row and onto NATS. :meth:`Outbox.publish` sends a batch without
waiting for each ack in turn (the acks come back on one reply subscription),
then waits for all of them at once: a refused or missing ack fails the batch.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

import asyncpg
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError
from pydantic import BaseModel, TypeAdapter

from clarin_common.events import AppType, Envelope, app_envelope, app_event_subject
from clarin_common.outage import NatsOutage, is_outage

log = structlog.get_logger(__name__)

# rows younger than this are still being published by the request that wrote them
RELAY_GRACE_S = 10.0
RELAY_BATCH = 500
# how long a publish waits for JetStream's acks before leaving the rows to the relay
PUBLISH_ACK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PendingEvent:
    """An event written to the outbox, to publish once its transaction committed."""

    id: str
    subject: str
    payload: bytes  # the envelope as JSON, serialized once


Event = tuple[str, Envelope[Any]]


_STR = TypeAdapter(str)
_OPTIONAL_STR = TypeAdapter(str | None)
_DATETIME = TypeAdapter(datetime)


def envelope_json(env: Envelope[Any]) -> bytes:
    """``env.model_dump_json()``, byte for byte, faster: ``data`` is typed ``Any``
    on the envelope, so pydantic would infer its serializer value by value; the
    payload's own model serializes it at full speed instead."""
    data = env.data
    if not isinstance(data, BaseModel):
        return env.model_dump_json().encode()
    return b"".join(
        (
            b'{"id":',
            _STR.dump_json(env.id),
            b',"type":',
            _STR.dump_json(env.type),
            b',"account_id":',
            _STR.dump_json(env.account_id),
            b',"device_id":',
            _OPTIONAL_STR.dump_json(env.device_id),
            b',"occurred_at":',
            _DATETIME.dump_json(env.occurred_at),
            b',"data":',
            data.model_dump_json().encode(),
            b"}",
        )
    )


async def stage_events(conn: asyncpg.Connection, events: Sequence[Event]) -> list[PendingEvent]:
    """Write ``(subject, envelope)`` pairs to the outbox inside the caller's
    transaction (one statement); hand the result to :meth:`Outbox.publish` after
    the commit."""
    pending = [
        PendingEvent(id=env.id, subject=subject, payload=envelope_json(env))
        for subject, env in events
    ]
    if pending:
        await conn.execute(
            """
            INSERT INTO outbox (id, subject, payload)
            SELECT id, subject, payload::jsonb
            FROM unnest($1::uuid[], $2::text[], $3::text[]) AS e(id, subject, payload)
            """,
            [e.id for e in pending],
            [e.subject for e in pending],
            [e.payload.decode() for e in pending],
        )
    return pending


def app_event(
    account_id: str, type_: AppType, data: BaseModel, *, device_id: str | None = None
) -> Event:
    """``app.{account}.{type}`` and its envelope, ready for :func:`stage_events`."""
    return (
        app_event_subject(account_id, type_),
        app_envelope(account_id, type_, data, device_id=device_id),
    )


class _Batch:
    """The acks one publish still waits for."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.left = len(tokens)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(self, error: Exception | None) -> None:
        if self.done.done():
            return
        if error is not None:
            self.done.set_exception(error)
            return
        self.left -= 1
        if self.left == 0:
            self.done.set_result(None)


class _AckInbox:
    """JetStream publish acks on one reply subscription (``{inbox}.{n}``): a
    batch publishes back to back and waits once, for all its acks.

    Leaner than ``js.publish`` (a request each) and ``js.publish_async`` (a
    future, a semaphore wait and a decoded ``PubAck`` each): an ack is matched
    to its batch by token and only read for an error."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.prefix = f"{nc.new_inbox()}."
        self.sub: Any = None
        self.waiting: dict[str, _Batch] = {}
        self.seq = 0

    async def publish(self, events: Sequence[PendingEvent], timeout: float) -> None:
        if self.sub is None or self.sub._closed:  # first use, or unsubscribed by a drain
            self.sub = await self.nc.subscribe(f"{self.prefix}*", cb=self._on_ack)
        tokens = [str(self.seq + i) for i in range(len(events))]
        self.seq += len(events)
        batch = _Batch(tokens)
        for token in tokens:
            self.waiting[token] = batch
        try:
            for token, e in zip(tokens, events, strict=True):
                await self.nc.publish(
                    e.subject, e.payload, reply=self.prefix + token, headers={"Nats-Msg-Id": e.id}
                )
            await asyncio.wait_for(asyncio.shield(batch.done), timeout)
        finally:
            for token in tokens:
                self.waiting.pop(token, None)
            if not batch.done.done():
                batch.done.cancel()
            elif not batch.done.cancelled():
                batch.done.exception()  # retrieved, also when publishing itself failed

    async def _on_ack(self, msg: Msg) -> None:
        batch = self.waiting.pop(msg.subject[len(self.prefix) :], None)
        if batch is None:
            return  # late, for a batch that gave up
        if msg.headers and msg.headers.get("Status") == "503":
            batch.settle(NoStreamResponseError())
        elif b'"error"' in msg.data:
            batch.settle(APIError.from_error(json.loads(msg.data)["error"]))
        else:
            batch.settle(None)


class Outbox:
    """Publishes staged events after commit and relays what was left behind.

    An async context manager: entering starts the relay, leaving stops it.
    """

    def __init__(
        self, pool: asyncpg.Pool, js: JetStreamContext, relay_interval: float, name: str = "outbox"
    ) -> None:
        self.pool = pool
        self.js = js
        self.relay_interval = relay_interval
        self.name = name
        self.outage = NatsOutage(f"outbox:{name}")
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # the connection under the JetStream context: acks come back on it
        self._acks = _AckInbox(js._nc)

    async def publish(self, events: Sequence[PendingEvent]) -> None:
        """Publish committed events now; on failure the relay sends them later.

        Never raises: the change is committed, so the caller's answer stands.
        """
        if not events:
            return
        try:
            await self._acks.publish(events, PUBLISH_ACK_TIMEOUT_S)
            await self.pool.execute(
                "DELETE FROM outbox WHERE id = ANY($1::uuid[])", [e.id for e in events]
            )
        except Exception as exc:
            if is_outage(exc):  # said once per outage; the relay sends them later
                self.outage.failed(exc, deferred=len(events))
            else:
                log.warning("app_events_deferred", count=len(events), error=str(exc)[:300])
            return
        self.outage.ok()

    async def relay_once(self, grace: float = RELAY_GRACE_S) -> int:
        """Publish the events older than ``grace`` seconds that are still in the
        outbox; how many."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                SELECT id, subject, payload::text AS payload FROM outbox
                WHERE created_at < now() - make_interval(secs => $1)
                ORDER BY created_at
                LIMIT $2
                FOR UPDATE SKIP LOCKED
                """,
                grace,
                RELAY_BATCH,
            )
            if not rows:
                return 0
            events = [PendingEvent(str(r["id"]), r["subject"], r["payload"].encode()) for r in rows]
            await self._acks.publish(events, PUBLISH_ACK_TIMEOUT_S)
            await conn.execute(
                "DELETE FROM outbox WHERE id = ANY($1::uuid[])", [e.id for e in events]
            )
        log.info("app_events_relayed", count=len(events))
        return len(events)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), self.relay_interval)
                return  # stopped while waiting
            except TimeoutError:
                pass
            try:
                if await self.relay_once():
                    self.outage.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_outage(exc):
                    self.outage.failed(exc)
                else:
                    log.warning("outbox_relay_failed", error=str(exc)[:300])

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=f"{self.name}:relay")

    async def stop(self) -> None:
        """A relay pass under way finishes (published rows are deleted, not left
        to be sent twice); a pass that hangs is cancelled."""
        if self._task is not None:
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), PUBLISH_ACK_TIMEOUT_S + 5)
            except TimeoutError:
                self._task.cancel()
                with suppress(asyncio.CancelledError):
                    await self._task
            self._task = None

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
