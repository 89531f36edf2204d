"""Sends due deliveries, records the outcome, schedules retries.

The queue is the ``deliveries`` table. A dispatcher claims due rows with
``FOR UPDATE SKIP LOCKED`` (so replicas share the work and never take the same
row), marks them ``sending`` with a claim that expires, POSTs them, and writes
the outcomes back in batches. A process that dies mid-attempt leaves its rows
``sending`` until the claim expires; they are then due again, with the same
delivery id (the receiver sees the same ``X-Clarin-Delivery``).

Fairness between webhooks: each claim takes at most a few rows per webhook, and
a webhook with its share already in flight in this process is skipped, so one
slow receiver cannot hold every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import structlog
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from clarin_common.db import plain
from clarin_webhooks.crypto import InvalidToken, SecretBox, signature
from clarin_webhooks.delivery.targets import blocked_reason
from clarin_webhooks.settings import WebhooksSettings

log = structlog.get_logger(__name__)

ATTEMPTS = PromCounter(
    "clarin_webhook_attempts_total", "Webhook delivery attempts by outcome", ["outcome"]
)
ATTEMPT_SECONDS = Histogram(
    "clarin_webhook_attempt_seconds", "Duration of one webhook delivery attempt"
)
CLAIM_SECONDS = Histogram("clarin_webhook_claim_seconds", "Duration of one claim of due deliveries")
CLAIMED = PromCounter(
    "clarin_webhook_claimed_total",
    "Deliveries claimed for an attempt: fresh ones by the consumer, due ones by the claim loop",
    ["by"],
)
RECORD_SECONDS = Histogram(
    "clarin_webhook_record_seconds", "Duration of one write of attempt outcomes"
)

USER_AGENT = "Clarin-Webhooks/1"
MAX_ERROR = 500
MAX_ANSWER = 64 * 1024
CLAIM_BATCH = 500
COALESCE_S = 0.005
PRUNE_EVERY_S = 600.0

# $2/$3: the webhooks with attempts in flight in this process and how many;
# each webhook gets at most its remaining share ($4 minus those) per claim
_CLAIM = """
WITH flying AS (
    SELECT * FROM unnest($2::uuid[], $3::int[]) AS f(webhook_id, n)
),
pick AS (
    SELECT c.id
    FROM webhooks w
    LEFT JOIN flying f ON f.webhook_id = w.id
    CROSS JOIN LATERAL (
        SELECT d.id, d.next_attempt_at
        FROM deliveries d
        WHERE d.webhook_id = w.id
          AND d.status IN ('pending', 'sending')
          AND d.next_attempt_at <= now()
        ORDER BY d.next_attempt_at
        LIMIT GREATEST($4 - COALESCE(f.n, 0), 0)
        FOR UPDATE SKIP LOCKED
    ) c
    WHERE w.active
    ORDER BY c.next_attempt_at
    LIMIT $1
)
UPDATE deliveries d SET
    status = 'sending',
    attempt = d.attempt + 1,
    next_attempt_at = now() + make_interval(secs => $5),
    last_attempt_at = now()
FROM pick, webhooks w
WHERE d.id = pick.id AND w.id = d.webhook_id
RETURNING d.id, d.webhook_id, d.event_type, d.body, d.attempt, d.give_up_at,
          w.url, w.secret_encrypted
"""

# fresh rows claimed by id in the transaction that inserted them
_CLAIM_IDS = """
UPDATE deliveries d SET
    status = 'sending',
    attempt = d.attempt + 1,
    next_attempt_at = now() + make_interval(secs => $2),
    last_attempt_at = now()
FROM webhooks w
WHERE d.id = ANY($1::uuid[]) AND d.status = 'pending' AND w.id = d.webhook_id
RETURNING d.id, d.webhook_id, d.event_type, d.body, d.attempt, d.give_up_at,
          w.url, w.secret_encrypted
"""

# Claims and outcomes commit without waiting for the WAL flush: should PostgreSQL
# crash and lose the last few of them, a lost claim leaves the row due and a lost
# outcome leaves it claimed until the claim expires. Either way it is attempted
# again with the same delivery id, which at-least-once delivery allows. (The
# consumer's INSERT does wait: JetStream forgets the event once it is acked.)
_NO_FLUSH_WAIT = "SET LOCAL synchronous_commit = off"

_RECORD = """
UPDATE deliveries d SET
    status = CASE WHEN r.ok THEN 'delivered'
                  WHEN r.retry_at IS NULL THEN 'failed'
                  ELSE 'pending' END,
    status_code = r.status_code,
    error = r.error,
    delivered_at = CASE WHEN r.ok THEN r.attempted_at ELSE NULL END,
    next_attempt_at = r.retry_at,
    last_attempt_at = r.attempted_at
FROM unnest($1::uuid[], $2::int[], $3::bool[], $4::int[], $5::text[],
            $6::timestamptz[], $7::timestamptz[])
     AS r(id, attempt, ok, status_code, error, attempted_at, retry_at)
WHERE d.id = r.id AND d.status = 'sending' AND d.attempt = r.attempt
"""

_PRUNE = """
DELETE FROM deliveries WHERE id IN (
    SELECT id FROM deliveries
    WHERE status IN ('delivered', 'failed')
      AND created_at < now() - make_interval(secs => $1)
    LIMIT 5000
)
"""


@dataclass(frozen=True)
class Claimed:
    id: str
    webhook_id: str
    event_type: str
    body: str
    attempt: int
    give_up_at: datetime
    url: str
    secret_encrypted: str


@dataclass(frozen=True)
class Outcome:
    id: str
    attempt: int
    ok: bool
    status_code: int | None
    error: str | None
    attempted_at: datetime
    retry_at: datetime | None


def _claimed(r: asyncpg.Record) -> Claimed:
    # the claim's RETURNING names exactly the fields of Claimed
    return Claimed(**plain(r))


def backoff_seconds(attempt: int, settings: WebhooksSettings) -> float:
    """Wait after failed attempt number ``attempt`` (1-based): base, doubling, capped, ±jitter."""
    delay = min(
        settings.retry_base_seconds * 2.0 ** max(attempt - 1, 0),
        settings.retry_max_interval_seconds,
    )
    jitter = settings.retry_jitter
    return delay * random.uniform(1 - jitter, 1 + jitter)


class Dispatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        client: aiohttp.ClientSession,
        box: SecretBox,
        settings: WebhooksSettings,
    ) -> None:
        self.pool = pool
        self.client = client
        self.box = box
        self.settings = settings
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._results: list[Outcome] = []
        self._results_ready = asyncio.Event()
        self._in_flight: Counter[str] = Counter()
        # webhooks whose fresh deliveries overflowed their share: the claim loop
        # serves them, oldest first, until it finds their backlog gone (else new
        # events taken at birth would overtake the older ones for ever)
        self._backlogged: set[str] = set()
        self._sending: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    # ---- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="webhooks:claim"),
            asyncio.create_task(self._record_loop(), name="webhooks:record"),
            asyncio.create_task(self._prune_loop(), name="webhooks:prune"),
        ]

    async def stop(self) -> None:
        """Stop claiming, let the attempts in hand finish (bounded), record them."""
        self._stopping.set()
        self._wakeup.set()
        claim = self._tasks[0] if self._tasks else None
        if claim is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(claim, 5)
        if self._sending:
            await asyncio.wait(self._sending, timeout=self.settings.delivery_timeout_seconds + 1)
        for task in self._sending:
            task.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._record_pending()

    def wake(self) -> None:
        """New deliveries are due (called after the consumer's commit)."""
        self._wakeup.set()

    @property
    def in_flight(self) -> int:
        """Attempts claimed by this process and not finished (running or about to)."""
        return sum(self._in_flight.values())

    # ---- claiming ----------------------------------------------------------------

    async def take_new(self, conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[Claimed]:
        """Claim fresh deliveries inside the consumer's transaction that created
        them, as far as this process has room (per webhook and in all), so that
        the common path needs no claim of its own. What is left waits for the
        claim loop. The caller hands the result to :meth:`launch` after its
        commit, or to :meth:`release` if the transaction failed."""
        if self._stopping.is_set():
            return []
        cap = self.settings.max_in_flight_per_webhook
        room = self.settings.max_in_flight - self.in_flight
        taken: Counter[str] = Counter()
        ids: list[uuid.UUID] = []
        for row in rows:
            webhook_id = str(row["webhook_id"])
            if webhook_id in self._backlogged:
                continue
            if len(ids) >= room or self._in_flight[webhook_id] + taken[webhook_id] >= cap:
                self._backlogged.add(webhook_id)
                continue
            taken[webhook_id] += 1
            ids.append(row["id"])
        if not ids:
            return []
        claimed = await conn.fetch(_CLAIM_IDS, ids, float(self.settings.claim_seconds))
        items = [_claimed(r) for r in claimed]
        for item in items:
            self._in_flight[item.webhook_id] += 1
        CLAIMED.labels("consumer").inc(len(items))
        return items

    def launch(self, items: list[Claimed]) -> None:
        """Start the attempts of deliveries claimed (and counted) by this process."""
        for item in items:
            task = asyncio.create_task(self._attempt(item))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def release(self, items: list[Claimed]) -> None:
        """Forget claims whose transaction did not commit."""
        for item in items:
            self._uncount(item.webhook_id)

    async def claim(self, limit: int) -> list[Claimed]:
        in_flight = list(self._in_flight.items())
        with CLAIM_SECONDS.time():
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(_NO_FLUSH_WAIT)
                rows = await conn.fetch(
                    _CLAIM,
                    limit,
                    [w for w, _ in in_flight],
                    [n for _, n in in_flight],
                    self.settings.max_in_flight_per_webhook,
                    float(self.settings.claim_seconds),
                )
        CLAIMED.labels("claim_loop").inc(len(rows))
        items = [_claimed(r) for r in rows]
        got = Counter(item.webhook_id for item in items)
        if len(items) < limit:
            # a backlogged webhook that got less than its share has nothing more due
            cap = self.settings.max_in_flight_per_webhook
            in_flight_before = dict(in_flight)
            for webhook_id in list(self._backlogged):
                if got[webhook_id] < cap - in_flight_before.get(webhook_id, 0):
                    self._backlogged.discard(webhook_id)
        for item in items:
            self._in_flight[item.webhook_id] += 1
        return items

    async def _claim_loop(self) -> None:
        """Claim what is due whenever something may have changed: new deliveries
        (the consumer's wake), a finished attempt (a slot, maybe a webhook's
        share, is free again), or the poll interval for retries coming due."""
        poll = self.settings.poll_interval_seconds
        while not self._stopping.is_set():
            free = self.settings.max_in_flight - self.in_flight
            claimed: list[Claimed] = []
            if free > 0:
                self._wakeup.clear()
                try:
                    claimed = await self.claim(min(free, CLAIM_BATCH))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("webhook_claim_failed", error=str(exc)[:300])
                    await asyncio.sleep(poll)
                self.launch(claimed)
                if len(claimed) >= min(free, CLAIM_BATCH):
                    continue  # more may be due right away
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), poll)
            # let a few more attempts finish or deliveries arrive, so that one
            # claim takes many rows instead of one round trip per slot
            await asyncio.sleep(COALESCE_S)

    def _uncount(self, webhook_id: str) -> None:
        self._in_flight[webhook_id] -= 1
        if self._in_flight[webhook_id] <= 0:
            del self._in_flight[webhook_id]

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._wakeup.set()

    # ---- one attempt ---------------------------------------------------------------

    async def _attempt(self, item: Claimed) -> None:
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        outcome = "ok"
        try:
            status_code, error, outcome = await self._post(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not lose the outcome
            log.exception("webhook_attempt_crashed", delivery_id=item.id)
            error, outcome = f"Internal error: {type(exc).__name__}", "error"
        finally:
            self._uncount(item.webhook_id)
        ATTEMPTS.labels(outcome).inc()
        ATTEMPT_SECONDS.observe(time.perf_counter() - started)
        now = datetime.now(UTC)
        ok = outcome == "ok"
        retry_at = None
        if not ok:
            retry_at = now + timedelta(seconds=backoff_seconds(item.attempt, self.settings))
            if retry_at > item.give_up_at:
                retry_at = None
                log.warning(
                    "webhook_delivery_gave_up",
                    delivery_id=item.id,
                    webhook_id=item.webhook_id,
                    attempts=item.attempt,
                    error=error,
                )
        self._results.append(Outcome(item.id, item.attempt, ok, status_code, error, now, retry_at))
        self._results_ready.set()

    async def _post(self, item: Claimed) -> tuple[int | None, str | None, str]:
        """POST one delivery: (status code, error, outcome label)."""
        try:
            secret = self.box.decrypt(item.secret_encrypted)
        except InvalidToken:
            return None, "The webhook's secret cannot be decrypted (WEBHOOKS_SECRET_KEY)", "error"
        body = item.body.encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Clarin-Event": item.event_type,
            "X-Clarin-Delivery": item.id,
            "X-Clarin-Timestamp": timestamp,
            "X-Clarin-Signature": signature(secret, timestamp, body),
        }
        limit = self.settings.delivery_timeout_seconds
        try:
            async with (
                asyncio.timeout(limit),
                self.client.post(
                    item.url, data=body, headers=headers, allow_redirects=False
                ) as resp,
            ):
                status = resp.status
                # a bounded look at the answer (it lets a small one end cleanly
                # and keep the connection); a large answer is never held
                await resp.content.read(MAX_ANSWER)
        except TimeoutError:
            return None, f"No answer within {limit:g} s", "timeout"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            reason = blocked_reason(exc)
            if reason is not None:
                return None, f"Blocked: {reason}"[:MAX_ERROR], "blocked"
            text = str(exc) or type(exc).__name__
            return None, f"{type(exc).__name__}: {text}"[:MAX_ERROR], "connect_error"
        if 200 <= status < 300:
            return status, None, "ok"
        return status, f"HTTP {status}", "http_error"

    # ---- outcomes ------------------------------------------------------------------

    async def _record_pending(self) -> None:
        if not self._results:
            return
        batch, self._results = self._results, []
        try:
            with RECORD_SECONDS.time():
                async with self.pool.acquire() as conn, conn.transaction():
                    await conn.execute(_NO_FLUSH_WAIT)
                    await conn.execute(
                        _RECORD,
                        [o.id for o in batch],
                        [o.attempt for o in batch],
                        [o.ok for o in batch],
                        [o.status_code for o in batch],
                        [o.error for o in batch],
                        [o.attempted_at for o in batch],
                        [o.retry_at for o in batch],
                    )
        except Exception:
            self._results = batch + self._results  # try again with the next batch
            raise

    async def _record_loop(self) -> None:
        while True:
            await self._results_ready.wait()
            self._results_ready.clear()
            # gather a few more outcomes into the same statement
            await asyncio.sleep(0.02)
            try:
                await self._record_pending()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook_record_failed", error=str(exc)[:300])
                await asyncio.sleep(1)
                self._results_ready.set()

    async def _prune_loop(self) -> None:
        keep = self.settings.retention_days * 86400
        while True:
            try:
                while True:
                    result: str = await self.pool.execute(_PRUNE, float(keep))
                    if result == "DELETE 0":
                        break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook_prune_failed", error=str(exc)[:300])
            await asyncio.sleep(PRUNE_EVERY_S)
