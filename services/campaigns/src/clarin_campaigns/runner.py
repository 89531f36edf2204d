"""The scheduler: hands each running campaign's recipients to messaging, paced
per device, and publishes ``campaign_progress`` at most once a second.

- One scheduler sends at a time across replicas (a PostgreSQL advisory lock
  held on a connection of its own); the others wait to take over.
- A device gives campaign sends one slot every ``60 / per_minute`` seconds
  ± ``CAMPAIGNS_JITTER``; campaigns on one device take turns, oldest started
  first. The pace is this service's; the device's own queue paces too
  (``WORKER_SEND_RATE_PER_SECOND``), so a campaign never goes above it.
  Pacing survives a restart: a device's next slot follows its last hand-over.
- A hand-over claims the next recipient (status ``sending``, its message id
  fixed now), asks messaging on ``svc.messaging.send`` to store and queue it
  (``client_id`` ``campaign:{campaign}:{lead}``, priority ``bulk``), and marks it
  ``queued``. A crash in between leaves it ``sending``: it is asked again with
  the same ids, which messaging answers with the message it already has. So a
  recipient is messaged at most once per campaign, across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import asyncpg
import structlog
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from clarin_campaigns.campaigns import repository as repo
from clarin_campaigns.campaigns.render import fill
from clarin_campaigns.settings import CampaignsSettings
from clarin_common.db import transaction
from clarin_common.events import (
    MESSAGING_SEND_SUBJECT,
    CampaignProgressData,
    CommandReply,
    ServiceSendRequest,
)
from clarin_common.outage import NatsOutage, is_outage
from clarin_common.outbox import Outbox, app_event, stage_events

log = structlog.get_logger(__name__)

LOCK_KEY = 0x0C1A_C4A1  # the scheduler's advisory lock
LOCK_RETRY_SECONDS = 2.0


class Scheduler:
    def __init__(
        self, pool: asyncpg.Pool, nc: NatsClient, outbox: Outbox, settings: CampaignsSettings
    ) -> None:
        self.pool = pool
        self.nc = nc
        self.outbox = outbox
        self.settings = settings
        self._tasks: list[asyncio.Task[None]] = []
        self._next_at: dict[str, float] = {}  # device id → wall time of its next slot
        # messaging (or NATS) away: said once, not per send
        self.outage = NatsOutage("campaigns:send")

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="campaigns:scheduler"),
            asyncio.create_task(self._progress_loop(), name="campaigns:progress"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # ---- sending ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                async with self.pool.acquire() as lock_conn:
                    if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                        await asyncio.sleep(LOCK_RETRY_SECONDS)
                        continue
                    log.info("campaign_scheduler_leading")
                    try:
                        await self._lead()
                    finally:
                        with contextlib.suppress(Exception):
                            await lock_conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("campaign_scheduler_failed")
                await asyncio.sleep(1.0)

    async def _lead(self) -> None:
        self._next_at.clear()
        while True:
            await self.tick()
            await asyncio.sleep(self.settings.tick_seconds)

    def _interval(self, per_minute: int) -> float:
        base = 60.0 / per_minute
        return base * (1 + self.settings.jitter * random.uniform(-1.0, 1.0))

    async def tick(self) -> int:
        """Hand over what is due now; how many recipients were handed over."""
        campaigns = await repo.running(self.pool)
        by_device: dict[str, list[repo.Running]] = {}
        for campaign in campaigns:
            by_device.setdefault(campaign.device_id, []).append(campaign)
        unknown = [d for d in by_device if d not in self._next_at]
        if unknown:
            last = await repo.last_handed(self.pool, unknown)
            for device_id in unknown:
                at = last.get(device_id)
                per_minute = by_device[device_id][0].per_minute
                self._next_at[device_id] = (
                    at.timestamp() + self._interval(per_minute) if at is not None else 0.0
                )
        handed = 0
        now = time.time()
        for device_id, queue in by_device.items():
            if now < self._next_at[device_id]:
                continue
            for campaign in queue:
                async with transaction(self.pool) as conn:
                    claimed = await repo.claim_next(conn, campaign.id)
                if claimed is None:
                    async with transaction(self.pool) as conn:
                        await repo.finish_if_done(conn, [campaign.id])
                    continue
                # from the slot's due time, not from the tick that noticed it: the
                # scheduler's tick does not slow the pace down
                due = self._next_at[device_id]
                base = due if due >= now - 2 * self.settings.tick_seconds else now
                self._next_at[device_id] = base + self._interval(campaign.per_minute)
                await self._hand_over(campaign, claimed)
                handed += 1
                break
        return handed

    async def _hand_over(self, campaign: repo.Running, claimed: repo.Claimed) -> None:
        request = ServiceSendRequest(
            account_id=campaign.account_id,
            device_id=campaign.device_id,
            to=claimed.phone,
            body=fill(campaign.body, claimed.name),
            client_id=f"campaign:{campaign.id}:{claimed.lead_id}",
            priority="bulk",
            message_id=claimed.message_id,
        )
        try:
            raw = await self.nc.request(
                MESSAGING_SEND_SUBJECT,
                request.model_dump_json().encode(),
                timeout=self.settings.send_timeout_seconds,
            )
            reply = CommandReply.model_validate_json(raw.data)
        except (NoRespondersError, NatsTimeoutError, ValidationError) as exc:
            # left ``sending``: asked again with the same ids at the next slot
            if is_outage(exc):
                self.outage.failed(exc, campaign_id=campaign.id)
            else:
                log.warning("campaign_send_not_answered", campaign_id=campaign.id, error=repr(exc))
            return
        self.outage.ok()
        if reply.ok:
            await repo.mark_handed(self.pool, campaign.id, claimed.lead_id, "queued")
            return
        error = (reply.error or {}).get("message") or "messaging refused the send"
        await repo.mark_handed(self.pool, campaign.id, claimed.lead_id, "failed", error)

    # ---- progress ---------------------------------------------------------------------

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.progress_interval_seconds)
            try:
                await self.publish_progress()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("campaign_progress_failed", error=str(exc)[:300])

    async def publish_progress(self) -> int:
        """One ``campaign_progress`` per campaign whose counters changed; how many."""
        async with transaction(self.pool) as conn:
            dirty = await repo.take_dirty(conn)
            if not dirty:
                return 0
            campaigns = await repo.get_many(conn, dirty)
            events = await stage_events(
                conn,
                [
                    app_event(account_id, "campaign_progress", CampaignProgressData(campaign=c))
                    for account_id, c in campaigns
                ],
            )
        await self.outbox.publish(events)
        return len(events)
