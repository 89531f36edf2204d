"""The JetStream consumers of the messaging service, started by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

from clarin_common.events import APP_EVENTS_STREAM, WA_EVENTS_STREAM
from clarin_common.nats import Delivery, PullConsumer
from clarin_messaging.context import Messaging
from clarin_messaging.ingest.leads import handle_lead_events
from clarin_messaging.ingest.service import handle_wa_events

WA_FILTERS = ["wa.evt.*.*.message", "wa.evt.*.*.receipt", "wa.evt.*.*.sent"]
LEAD_FILTERS = ["app.*.lead_created", "app.*.lead_updated", "app.*.lead_deleted"]


log = structlog.get_logger(__name__)


class Consumer(PullConsumer):
    """The common PullConsumer with two changes (worth moving into libs/common).

    * It fetches the next batch while the current one is being stored, so the
      NATS round trip and the parsing of the incoming messages overlap with the
      wait on PostgreSQL instead of adding to it. Batches are still handled one
      at a time, in stream order.
    * It drops its pull subscription on stop. Otherwise the answer to the fetch
      cancelled by ``stop()`` lands in the subscription's queue with no one to
      read it, and the lifespan's ``nc.drain()`` waits its full timeout for it.
    """

    _sub: Any = None
    # batches in hand at once (their transactions still take turns)
    overlap: int = 1

    async def _subscription(self) -> Any:
        self._sub = await super()._subscription()
        return self._sub

    async def _fetch(self, sub: Any) -> list[Msg]:
        try:
            msgs: list[Msg] = await sub.fetch(self.batch_size, timeout=self.fetch_timeout)
            return msgs
        except (NatsTimeoutError, TimeoutError):
            return []
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("consumer_fetch_failed", durable=self.durable, error=str(exc))
            await asyncio.sleep(1)
            return []

    async def _run(self, sub: Any) -> None:
        ahead: asyncio.Task[list[Msg]] | None = None
        handling: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                if ahead is None:
                    ahead = asyncio.create_task(self._fetch(sub))
                msgs = await ahead
                ahead = None
                if not msgs:
                    continue
                while len(handling) >= self.overlap:
                    await asyncio.wait(handling, return_when=asyncio.FIRST_COMPLETED)
                if not self._stopping.is_set():
                    ahead = asyncio.create_task(self._fetch(sub))
                self._idle.clear()
                task = asyncio.create_task(self._handle(msgs))
                handling.add(task)
                task.add_done_callback(lambda t: self._done(handling, t))
            if handling:
                await asyncio.wait(handling)
        finally:
            if ahead is not None:
                ahead.cancel()
                # a batch fetched but not handled: hand it back at once
                if ahead.done() and not ahead.cancelled() and ahead.exception() is None:
                    for msg in ahead.result():
                        with contextlib.suppress(Exception):
                            await msg.nak()
            for task in handling:
                task.cancel()

    async def _handle(self, msgs: list[Msg]) -> None:
        try:
            await self.process(msgs)
        except Exception:
            log.exception("consumer_batch_crashed", durable=self.durable)

    def _done(self, handling: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        handling.discard(task)
        if not handling:
            self._idle.set()

    async def stop(self) -> None:
        await super().stop()
        if self._sub is not None:
            with contextlib.suppress(Exception):  # already gone with the connection
                await self._sub.unsubscribe()
            self._sub = None


def wa_events_consumer(ctx: Messaging, *, durable: str | None = None) -> Consumer:
    settings = ctx.settings

    db_turn = asyncio.Lock()

    async def handler(deliveries: list[Delivery]) -> None:
        await handle_wa_events(ctx, deliveries, db_turn)

    consumer = Consumer(
        ctx.js,
        stream=WA_EVENTS_STREAM,
        durable=durable or settings.consumer_durable,
        filter_subjects=WA_FILTERS,
        handler=handler,
        batch_size=settings.consumer_batch_size,
        fetch_timeout=settings.consumer_fetch_timeout,
        ack_wait=settings.consumer_ack_wait,
    )
    consumer.overlap = settings.consumer_overlap
    return consumer


def lead_events_consumer(ctx: Messaging) -> Consumer:
    settings = ctx.settings

    async def handler(deliveries: list[Delivery]) -> None:
        await handle_lead_events(ctx, deliveries)

    return Consumer(
        ctx.js,
        stream=APP_EVENTS_STREAM,
        durable=settings.leads_consumer_durable,
        filter_subjects=LEAD_FILTERS,
        handler=handler,
        batch_size=200,
        fetch_timeout=settings.consumer_fetch_timeout,
        ack_wait=settings.consumer_ack_wait,
    )
