"""A device whose worker died shows ``connecting``, not ``connected``.

Each worker keeps a heartbeat key in the members bucket (``members_bucket``, TTL
``WORKER_HEARTBEAT_TTL_SECONDS``); a worker killed without a goodbye keeps its
device leases until they expire (``WORKER_LEASE_TTL_SECONDS``, longer), and
until another worker takes a device over nobody reports on it. The devices API
checks every ``holder_check_interval_seconds``: a device shown ``connected`` or
``qr_pending`` whose recorded holder has no heartbeat key any more becomes
``connecting``, announced as ``device_status`` through the outbox.

NATS 2.9 drops an expired KV entry without telling watchers, so the check reads
the bucket's keys rather than watching it. The order of the reads makes a worker
that just joined safe: holders are read from the database *before* the keys, and
a worker puts its heartbeat before it claims a device, so a holder missing from
the keys read afterwards stopped heartbeating before it was read. The update is
conditional on the holder: a device another worker claimed meanwhile is its own.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from clarin_common.db import transaction
from clarin_common.nats import kv_keys
from clarin_common.outage import NatsOutage, is_outage
from clarin_common.outbox import Outbox, stage_events
from clarin_devices.devices import repository as repo
from clarin_devices.devices.repository import Transition
from clarin_devices.events import device_status_events

log = structlog.get_logger(__name__)


class HolderCheck:
    """The periodic check (started and stopped by the API's context)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        outbox: Outbox,
        members_bucket: str,
        interval: float,
    ) -> None:
        self.pool = pool
        self.js = js
        self.outbox = outbox
        self.members_bucket = members_bucket
        self.interval = interval
        self.outage = NatsOutage("devices:holder_check")
        self._task: asyncio.Task[None] | None = None

    async def gone_workers(self, holders: set[str]) -> list[str] | None:
        """Those of ``holders`` without a heartbeat key; None when there is no bucket
        yet (no worker ever started) or NATS does not answer: nothing can be said.

        A holder missing from the key listing is confirmed by reading its key: the
        listing (an ordered consumer over the bucket) was seen to leave out a live
        worker under load, and a live worker whose devices were marked
        ``connecting`` would not notice (its own beats kept succeeding)."""
        try:
            kv = await self.js.key_value(self.members_bucket)
            keys = set(await kv_keys(kv))
            gone = []
            for worker in sorted(holders - keys):
                try:
                    await kv.get(worker)
                except KeyNotFoundError:  # expired or deleted: gone
                    gone.append(worker)
        except BucketNotFoundError:
            return None
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.outage.failed(exc)
            return None
        self.outage.ok()
        return gone

    async def check(self) -> list[Transition]:
        """Mark the devices of workers without a heartbeat ``connecting``; those
        whose status changed (announced after the commit)."""
        holders = await repo.live_holders(self.pool)  # before the keys: see the module doc
        if not holders:
            return []
        gone = await self.gone_workers(holders)
        if not gone:
            return []
        async with transaction(self.pool) as conn:
            transitions = await repo.mark_unheld(conn, gone)
            events = await stage_events(
                conn, [e for t in transitions for e in device_status_events(t.device)]
            )
        await self.outbox.publish(events)
        if transitions:
            log.info("devices_unheld", workers=gone, devices=len(transitions))
        return transitions

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("holder_check_failed", error=str(exc)[:300])

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="devices:holder_check")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
